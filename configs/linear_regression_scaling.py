"""Collapse vs data volume for linear regression: T over two decades, replace vs accumulate.

Command:
    collapse-jax run configs/linear_regression_scaling.py --out runs/linreg_scaling

Setting (Gerstgrasser et al. 2024, docs/theory.md section 1): d = 32, a fixed Gaussian design of
T = n = n0 in {40, 126, 400, 1265, 4000} rows, sigma^2 = 100, OLS each generation, 50 generations,
200 seeds. The run ends with the data-volume analysis (``collapse_jax.analyze``): ``scaling.csv``
and ``scaling.png`` (test error at generation 49 against T, log-log, with the closed form).

Expected runtime on 2 CPU cores: measured 52 s wall on the shared machine (load average 4.7;
10 compiles 29 s, running 11 s), analysis included.

Expected result: with u = sigma^2 d / (T - d - 1), the replace test error grows linearly with slope
u per generation (u = 457 at T = 40, 3.4 at T = 1265), so at g = 49 it is 50 u, falling like
1/T for T >> d; accumulate levels off at u sum_{j<=g+1} 1/j^2 <= u pi^2/6 (plateau about 1.62 u
over the last quarter; the closed form stays within 5% of it from generation 9).

Measured (200 seeds, g = 49, mean [95% bootstrap CI] vs closed form): replace test error
21,286 [19,458, 23,167] vs 22,857 at T = 40, 1,668 [1,606, 1,739] vs 1,720 at T = 126, 418 [403,
434] vs 436 at T = 400, 126 [122, 130] vs 130 at T = 1265, 39.4 [38.1, 40.7] vs 40.3 at T = 4000;
slope per generation 423 [384, 464] vs 457 (T = 40) ... 0.786 [0.758, 0.813] vs 0.807 (T = 4000).
Accumulate plateau 739 [668, 826] vs 742 (T = 40), 13.2 [12.8, 13.7] vs 14.1 (T = 400; the
replace value of the same designs is low too: both regimes share each seed's design), 1.32 [1.27,
1.36] vs 1.31 (T = 4000); plateau generation 6-8 vs 9 from the closed form: the approach is slow
(about 1% per generation near g = 9), so a plateau 2-3% below the closed form's, as these 200
seeds give, moves it by one to three generations.
"""

from collapse_jax import Experiment


def get_config() -> Experiment:
    return Experiment(
        name="linear_regression_scaling",
        model="linear_regression",
        regimes=("replace", "accumulate"),
        seeds=200,
        generations=50,
        n=(40, 126, 400, 1265, 4000),
        d=32,
        n_test=100,
        hparams={"sigma": 10.0},
        metrics=("test_error",),
    )
