"""Gaussian-kernel KDE refit on its own samples (two moons): replace vs accumulate.

Command:
    collapse-jax run configs/kde.py --out runs/kde

Setting (Kazdan et al. 2024, Shumailov et al. 2024): scikit-learn's two moons (noise 0.05), KDE
with fixed bandwidth h = 0.1, n in {10, 100, 1000} examples per generation (n0 = n), 100
generations, 100 seeds, 100 held-out real points per chain; replace, accumulate and
accumulate_subsample (fit on n0 pool points per generation).

Expected runtime on 2 CPU cores: RUNTIME_KDE

Expected result: held-out NLL (generation 0: RESULT_KDE_G0) grows without bound under replace
(the KDE is a random walk of its points plus kernel noise: variance h^2 added per generation, the
sample thins to a few lineages), while under accumulate it stays within 2x of generation 0 and
even falls (the pool keeps D0 and smooths it). accumulate_subsample lies in between.
Final-generation means: RESULT_KDE
"""

from collapse_jax import Experiment


def get_config() -> Experiment:
    return Experiment(
        name="kde",
        model="kde",
        source="moons",
        regimes=("replace", "accumulate", "accumulate_subsample"),
        seeds=100,
        generations=100,
        n=(10, 100, 1000),
        d=2,
        n_test=100,
        hparams={"h": 0.1, "noise": 0.05},
        options={"bandwidth": "fixed"},
    )
