"""Multivariate Gaussian refit on its own samples: replace vs accumulate vs accumulate_subsample.

Command:
    collapse-jax run configs/gaussian.py --out runs/gaussian

Setting (Kazdan et al. 2024; Shumailov et al. 2024): d = 10, real data N(0, I), n in {10, 32, 100}
examples per generation (n0 = n), 100 generations, 100 seeds, MLE covariance.

Expected runtime on 2 CPU cores: 38-61 s with an empty compilation cache and 6-11 s with the
programs in the program store (2026-12-04; 75-148 s cold in slower phases earlier): 9 groups of
an init and an advance program (replace and accumulate share their init programs), whose
compiling is most of a cold run (86%) and a quarter of a warm one (loading them); running 2-7
s; replace and accumulate use the Gaussian's exact fast path (benchmarks/README.md, the compile
report).

Measured g = 99 trace ratio (mean +- s.e., 100 seeds): replace 1e-6 / 0.038 +- 0.009 / 0.43 +-
0.08, accumulate 0.84 / 0.96 / 0.99, accumulate_subsample 0.69 / 0.95 / 0.98 for n = 10 / 32 /
100.

Expected result: under replace the trace ratio follows ((n-1)/n)^(g+1) (dashed theory line):
at g = 99 about 3.7e-5 for n = 10, 0.044 for n = 32, 0.37 for n = 100; the mean error rises
towards d sigma^2 = 10. Under accumulate the trace ratio stays bounded away from 0 (about 0.6-0.9)
and the mean error stays below ~(d/n) pi^2/6. accumulate_subsample lies in between.
"""

from collapse_jax import Experiment


def get_config() -> Experiment:
    return Experiment(
        name="gaussian",
        model="gaussian",
        regimes=("replace", "accumulate", "accumulate_subsample"),
        seeds=100,
        generations=100,
        n=(10, 32, 100),
        d=10,
        n_test=200,
        hparams={"sigma": 1.0},
    )
