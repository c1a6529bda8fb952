"""Host-side data loaders (numpy arrays) and the real-data sources built on them."""

from collapse_jax.data import images, text  # noqa: F401  (registers the image and text sources)
