"""Placeholder (filled in after measurement)."""

from collapse_jax import Experiment


def get_config() -> Experiment:
    return Experiment(
        name="lm_tiny", model="transformer_lm", source="kjv", regimes=("replace", "accumulate"),
        seeds=4, generations=5, n=512, d=128, n_test=256, hparams={"lr": 3e-3},
        options={"width": 128, "depth": 4, "heads": 4, "batch": 32, "budget": "epochs",
                 "epochs": 2, "warmup": 20})
