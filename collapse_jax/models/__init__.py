"""Model families. Importing this package registers every family (see ``model.register_model``)."""

from collapse_jax.models import gaussian, linear_regression, vae  # noqa: F401
