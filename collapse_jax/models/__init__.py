"""Model families. Importing this package registers every family (see ``model.register_model``)."""

from collapse_jax.models import (  # noqa: F401
    categorical,
    conformer_diffusion,
    gaussian,
    gmm,
    kde,
    linear_regression,
    location,
    transformer_lm,
    vae,
)
