"""Collapse vs data volume for linear regression: T over two decades, replace vs accumulate.

Command:
    collapse-jax run configs/linear_regression_scaling.py --out runs/linreg_scaling

Setting (Gerstgrasser et al. 2024, docs/theory.md section 1): d = 32, a fixed Gaussian design of
T = n = n0 in {40, 126, 400, 1265, 4000} rows, sigma^2 = 100, OLS each generation, 50 generations,
200 seeds. The run ends with the data-volume analysis (``collapse_jax.analyze``): ``scaling.csv``
and ``scaling.png`` (test error at generation 49 against T, log-log, with the closed form).

Expected runtime on 2 CPU cores: RUNTIME.

Expected result: with u = sigma^2 d / (T - d - 1), the replace test error grows linearly with slope
u per generation (u = 457 at T = 40, 3.4 at T = 1265), so at g = 49 it is 50 u, falling like
1/T for T >> d; accumulate levels off at u sum_{j<=g+1} 1/j^2 <= u pi^2/6 (plateau about 1.62 u
over the last quarter, reached within 5% after about 8 generations). MEASURED.
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
