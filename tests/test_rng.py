"""collapse_jax.rng: the same bits as jax.random (the unrolled hash is only faster), and the
Box-Muller normals.

Each comparison gives both sides a clone of the key (conftest checks key reuse).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from collapse_jax import rng

SHAPES = [(), (1,), (2,), (7,), (3, 5), (2, 3, 4), (1000,)]


@pytest.mark.parametrize("shape", SHAPES)
def test_same_bits_as_jax_random_under_jit_and_vmap(shape):
    keys = jax.random.split(jax.random.key(42), 16)
    for ours, ref in [(rng.normal, jax.random.normal), (rng.uniform, jax.random.uniform)]:
        got = jax.jit(jax.vmap(lambda k, f=ours: f(k, shape)))(jax.random.clone(keys))
        want = jax.vmap(lambda k, f=ref: f(k, shape))(jax.random.clone(keys))
        assert got.shape == want.shape == (16, *shape)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def _key(impl=None):
    return jax.random.key(7, impl=impl)


def test_uniform_bounds_and_float64():
    tiny = float(jnp.finfo(jnp.float32).tiny)
    np.testing.assert_array_equal(rng.uniform(_key(), (50,), minval=tiny, maxval=3.0),
                                  jax.random.uniform(_key(), (50,), minval=tiny, maxval=3.0))
    with jax.enable_x64(True):
        for dt in (jnp.float64, jnp.float32):
            np.testing.assert_array_equal(rng.normal(_key(), (40,), dt),
                                          jax.random.normal(_key(), (40,), dt))
            np.testing.assert_array_equal(rng.uniform(_key(), (40,), dt),
                                          jax.random.uniform(_key(), (40,), dt))
        assert rng.normal(_key(), (3,), jnp.float64).dtype == jnp.float64


def test_other_key_implementations_fall_back():
    np.testing.assert_array_equal(rng.normal(_key("rbg"), (5,)),
                                  jax.random.normal(_key("rbg"), (5,)))


def test_the_hash_is_unrolled_on_cpu():
    """What it is for: no loop in the compiled program (jax.random's CPU lowering has one)."""
    def hlo(f):
        return jax.jit(f).lower(_key()).compile().as_text()

    assert "while" not in hlo(lambda k: rng.normal(k, (64,)))
    assert "while" in hlo(lambda k: jax.random.normal(k, (64,)))  # the check can fail


def test_split_and_fold_in_give_the_same_keys():
    keys = jax.random.split(jax.random.key(3), 8)
    data = jax.random.key_data
    for num in (1, 2, 4, 5):
        got = jax.jit(jax.vmap(lambda k, n=num: data(rng.split(k, n))))(jax.random.clone(keys))
        want = jax.vmap(lambda k, n=num: data(jax.random.split(k, n)))(jax.random.clone(keys))
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    msgs = jnp.array([0, 1, 7, 2**31 - 1, 5, 6, 8, 9], jnp.int32)
    got = jax.jit(jax.vmap(lambda k, m: data(rng.fold_in(k, m))))(jax.random.clone(keys), msgs)
    want = jax.vmap(lambda k, m: data(jax.random.fold_in(k, m)))(jax.random.clone(keys), msgs)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    np.testing.assert_array_equal(data(rng.fold_in(_key(), 2**32 - 1)),
                                  data(jax.random.fold_in(_key(), 2**32 - 1)))
    assert jax.random.key_impl(rng.split(_key())) == jax.random.key_impl(_key())


def test_a_reused_key_is_still_caught():
    """The draws and ``split`` consume their key like jax.random's (conftest turns the checker
    on); ``fold_in`` does not, like jax.random.fold_in."""
    with jax.debug_key_reuse(True):
        k = _key()
        rng.fold_in(k, 1), rng.fold_in(k, 2), rng.fold_in(k, 1)
        for f in (lambda k: rng.normal(k, (3,)), lambda k: rng.uniform(k, (3,)),
                  lambda k: rng.split(k)):
            k = _key()
            f(k)
            with pytest.raises(jax.errors.KeyReuseError):
                f(k)

            def twice(k, f=f):
                return f(k), f(k)

            with pytest.raises(jax.errors.KeyReuseError):
                jax.jit(twice)(_key())


def test_box_muller_normals_odd_dimension():
    # d = 3 uses two Box-Muller pairs and drops the 4th normal; KS per coordinate at 1e-3 / 3,
    # and the pair (0, 1) jointly: |z|^2 ~ chi^2_2
    from scipy import stats

    from collapse_jax.rng import box_muller as normals

    z = np.asarray(normals(jax.random.uniform(jax.random.key(8), (4, 30_000)), 3), np.float64)
    assert z.shape == (30_000, 3)
    for col in range(3):
        assert stats.kstest(z[:, col], "norm").pvalue > 1e-3 / 3, col
    assert stats.kstest((z[:, :2] ** 2).sum(1), "chi2", args=(2,)).pvalue > 1e-3
