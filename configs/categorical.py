"""Categorical (K = 10) resampled from its own empirical frequencies: collapse to one outcome.

Command:
    collapse-jax run configs/categorical.py --out runs/categorical

Setting (Seddik et al. 2024): uniform true p over K = 10 outcomes, n in {10, 100, 1000} samples
per generation (n0 = n), replace, a cap of 3000 generations, 100 seeds. The generation of total
collapse of each chain is ``collapse_jax.models.categorical.first_collapse(results.table,
by=["n", "seed"])``.

Expected runtime on 2 idle CPU cores (2026-12-04): 23 s with an empty compilation cache
(compiling 15 s), 7.4 s with the programs in the program store (running 3.5 s).

Expected result: the collision probability follows 1 - (1 - 1/n)^(g+1) (1 - 1/K) (dashed theory
line). Every chain collapses (one outcome left) after about the Wright-Fisher absorption time
-2 n sum_k (1 - p_k) log(1 - p_k) = 1.9 n generations (theory.categorical_collapse_time).
Measured generation of total collapse (100 seeds): n = 10: mean 16.0, median 13 (theory ~19);
n = 100: mean 185, median 157 (~190); n = 1000: 91 of 100 chains collapsed by g = 2999, median
1406 among them (~1896). Final collision probability: 1.0 (n = 10, 100), 0.968 +- 0.011 for
n = 1000 (theory 0.955).
"""

from collapse_jax import Experiment


def get_config() -> Experiment:
    return Experiment(
        name="categorical",
        model="categorical",
        regimes=("replace",),
        seeds=100,
        generations=3000,
        n=(10, 100, 1000),
        d=10,
        n_test=100,
        options={"prior": "uniform"},
    )
