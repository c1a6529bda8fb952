"""Linear regression refit on its own labels: the theory figure of Gerstgrasser et al. 2024.

Command:
    collapse-jax run configs/linear_regression.py --out runs/linreg

Setting: d = 32, T in {100, 316, 1000} rows of a fixed Gaussian design (n = n0 = T), noise
sigma^2 = 100, OLS each generation, 50 generations, 100 seeds, replace and accumulate.

Expected runtime on 2 idle CPU cores: 10-12 s wall from an empty compilation cache and 5-5.6 s
with the programs in the program store (2026-12-04, evening; 15-21 s and 9-16 s cold / warm in
slower phases of the machine): 12 programs, chains ~2-3 s, the next group compiling while one
runs; warm, loading the programs is 0.9 s of it (benchmarks/README.md, the compile report).
The chains take seconds, so compiling dominates: the config compiles with ``compile="fast"``
(LLVM optimisation level 0); with ``--set compile=optimized`` the same run took 31 s (compiling
17.2 s, chains 2.8 s) and the test errors agree to 6e-5 relative.

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
        compile="fast",
    )
