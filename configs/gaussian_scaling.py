"""Collapse vs data volume for the multivariate Gaussian: n over two decades, replace vs accumulate.

Command:
    collapse-jax run configs/gaussian_scaling.py --out runs/gaussian_scaling
    collapse-jax analyze runs/gaussian_scaling --metric mean_error   # other metric in the figure

Setting (Shumailov et al. 2024; Kazdan et al. 2024): d = 4, real data N(0, I), MLE covariance,
n = n0 in {10, 32, 100, 316, 1000} examples per generation, 50 generations, 200 seeds; only the
trace ratio and the mean error are computed. The run ends with the data-volume analysis
(``collapse_jax.analyze``): ``scaling.csv`` and ``scaling.png`` (the trace ratio at generation 49
against n, log-log, with the closed form).

Expected runtime on 2 CPU cores: RUNTIME.

Expected result: under replace the trace ratio at g = 49 follows ((n-1)/n)^50 (dashed), from
~0.005 at n = 10 to ~0.95 at n = 1000; its slope per generation is close to -(1/n) (the curve
decays geometrically). Under accumulate the trace ratio levels off (plateau, reached within a few
generations) well above the replace value, closer to 1 as n grows. The mean error grows like
d (g + 1) / n under replace (a line of slope -1 on the log-log figure) and stays below about
(d / n) pi^2 / 6 under accumulate. MEASURED.
"""

from collapse_jax import Experiment


def get_config() -> Experiment:
    return Experiment(
        name="gaussian_scaling",
        model="gaussian",
        regimes=("replace", "accumulate"),
        seeds=200,
        generations=50,
        n=(10, 32, 100, 316, 1000),
        d=4,
        n_test=100,
        hparams={"sigma": 1.0},
        metrics=("trace_ratio", "mean_error"),
    )
