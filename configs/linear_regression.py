"""Linear regression refit on its own labels: the theory figure of Gerstgrasser et al. 2024.

Command:
    collapse-jax run configs/linear_regression.py --out runs/linreg

Setting: d = 32, T in {100, 316, 1000} rows of a fixed Gaussian design (n = n0 = T), noise
sigma^2 = 100, OLS each generation, 50 generations, 100 seeds, replace and accumulate.

Expected runtime on 2 CPU cores: measured 65 s (6 compiles: 22 s, running 42 s; load ~6).

Expected result (docs/theory.md, u = sigma^2 d / (T - d - 1)): test error |w_hat - w*|^2 grows
linearly under replace, u (g + 1) (T = 100: 47.8 at g = 0, 2388 at g = 49), and stays bounded
under accumulate, u sum_{j<=g+1} 1/j^2 <= u pi^2/6 (T = 100: 77.6 at g = 49); the Monte-Carlo
means lie on the dashed theory lines within a few standard errors.
"""

from collapse_jax import Experiment


def get_config() -> Experiment:
    return Experiment(
        name="linear_regression",
        model="linear_regression",
        regimes=("replace", "accumulate"),
        seeds=100,
        generations=50,
        n=(100, 316, 1000),
        d=32,
        n_test=100,
        hparams={"sigma": 10.0},
    )
