"""Categorical (K = 10) resampled from its own empirical frequencies: collapse to one outcome.

Command:
    collapse-jax run configs/categorical.py --out runs/categorical

Setting (Seddik et al. 2024): uniform true p over K = 10 outcomes, n in {10, 100, 1000} samples
per generation (n0 = n), replace, a cap of 3000 generations, 100 seeds. The generation of total
collapse of each chain is ``collapse_jax.models.categorical.first_collapse(results.table,
by=["n", "seed"])``.

Expected runtime on 2 CPU cores: RUNTIME_CAT

Expected result: the collision probability follows 1 - (1 - 1/n)^(g+1) (1 - 1/K) (dashed theory
line); every chain collapses (one outcome left) roughly after 2 n (K - 1)/K * ... generations:
RESULT_CAT
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
