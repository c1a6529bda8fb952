"""A location estimate refit on its own samples: Dey & Donoho's pi^2/6 law (mean and median).

Command:
    collapse-jax run configs/location.py --out runs/location
    collapse-jax run configs/location.py --set options.estimator=median --out runs/location_med

Setting (Dey & Donoho 2024): d = 1, real data N(0, 1), n = n0 = 100 points per generation; the
model is the pool's mean (or median) and samples N(theta, 1) around it; replace vs accumulate,
30 generations, 2000 seeds.

Expected result: under accumulate the variance of the estimate relative to generation 0 follows
sum_{j<=g+1} 1/j^2 (1.59 at g = 29, tending to pi^2/6 = 1.645), for the mean exactly and for the
median in the large-n limit; under replace it grows as g + 1 (a random walk).
"""

from collapse_jax import Experiment


def get_config() -> Experiment:
    return Experiment(
        name="location",
        model="location",
        regimes=("replace", "accumulate"),
        seeds=2000,
        generations=30,
        n=100,
        d=1,
        n_test=2,
        hparams={"sigma": 1.0},
        options={"estimator": "mean"},
    )
