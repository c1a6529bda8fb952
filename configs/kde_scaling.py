"""Collapse vs data volume for a Gaussian-kernel KDE (two moons): n over two decades.

Command:
    collapse-jax run configs/kde_scaling.py --out runs/kde_scaling

Setting (Kazdan et al. 2024; Shumailov et al. 2024): scikit-learn's two moons (noise 0.05), KDE
with fixed bandwidth h = 0.1, n = n0 in {10, 32, 100, 316, 1000} examples per generation, 50
generations, 100 seeds, 100 held-out real points per chain, replace vs accumulate. The run ends
with the data-volume analysis (``collapse_jax.analyze``): ``scaling.csv`` and ``scaling.png``
(held-out NLL at generation 49 against n, log-log; no closed form).

Expected runtime on 2 CPU cores: RUNTIME.

Expected result: under replace the held-out NLL grows with the generation, faster for small n
(the KDE's points random-walk with kernel noise and thin to a few lineages); under accumulate it
levels off near its generation-0 value. MEASURED.
"""

from collapse_jax import Experiment


def get_config() -> Experiment:
    return Experiment(
        name="kde_scaling",
        model="kde",
        source="moons",
        regimes=("replace", "accumulate"),
        seeds=100,
        generations=50,
        n=(10, 32, 100, 316, 1000),
        d=2,
        n_test=100,
        hparams={"h": 0.1, "noise": 0.05},
        options={"bandwidth": "fixed"},
    )
