"""Collapse vs data volume for the multivariate Gaussian: n over two decades, replace vs accumulate.

Command:
    collapse-jax run configs/gaussian_scaling.py --out runs/gaussian_scaling
    collapse-jax analyze runs/gaussian_scaling --metric mean_error   # other metric in the figure

Setting (Shumailov et al. 2024; Kazdan et al. 2024): d = 4, real data N(0, I), MLE covariance,
n = n0 in {10, 32, 100, 316, 1000} examples per generation, 50 generations, 200 seeds; only the
trace ratio and the mean error are computed. The run ends with the data-volume analysis
(``collapse_jax.analyze``): ``scaling.csv`` and ``scaling.png`` (the trace ratio at generation 49
against n, log-log, with the closed form).

Expected runtime on 2 CPU cores: measured 122 s wall on the shared machine (load average 5.7;
10 compiles 96 s, running 2.5 s: replace and accumulate use the Gaussian's exact fast path),
analysis included.

Expected result: under replace the trace ratio at g = 49 follows ((n-1)/n)^50 (dashed), from
~0.005 at n = 10 to ~0.95 at n = 1000 (the curve decays geometrically, so its least-squares slope
per generation is a summary, given with the closed form's in scaling.csv). Under accumulate the
trace ratio levels off (plateau, reached within a few generations) well above the replace value,
closer to 1 as n grows. The mean error (``collapse-jax analyze DIR --metric mean_error``) grows
like d (g + 1) / n under replace (a line of slope -1 on the log-log figure) and stays below about
(d / n) pi^2 / 6 under accumulate.

Measured (200 seeds, trace ratio at g = 49, mean [95% bootstrap CI] vs closed form): replace
0.0029 [0.0011, 0.0056] vs 0.0052 (n = 10; heavy-tailed), 0.22 [0.17, 0.28] vs 0.20 (32), 0.67
[0.60, 0.74] vs 0.61 (100), 0.89 [0.85, 0.93] vs 0.85 (316), 0.97 [0.95, 0.99] vs 0.95 (1000);
accumulate 0.83 [0.80, 0.87] (n = 10), 0.94 (32), 0.99 (100 to 1000), plateau reached at
generation 0-1 (within 5% from the start).
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
