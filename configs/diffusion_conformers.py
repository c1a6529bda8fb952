"""Conformer diffusion refit on its own conformers: replace vs accumulate (CPU-sized).

PROVISIONAL: runtime and results to be measured.
"""

from collapse_jax import Experiment


def get_config() -> Experiment:
    return Experiment(
        name="diffusion_conformers",
        model="conformer_diffusion",
        regimes=("replace", "accumulate"),
        seeds=4,
        generations=6,
        n=400,
        n0=400,
        d=12,
        n_test=100,
        hparams={"lr": 1e-3},
        options={"molecules": 20, "conformers": 30, "hidden": 32, "layers": 3,
                 "diffusion_steps": 50, "steps": 1000, "batch": 32},
    )
