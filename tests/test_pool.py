"""Pool and regime invariants: shapes never change, count and mask agree, only valid slots are
ever sampled, overflow is flagged and the dropped write changes nothing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from collapse_jax import pool as P
from collapse_jax import regimes as R


def _consistent(p: P.Pool, view: bool = False) -> None:
    assert int(p.count) == int(jnp.sum(p.valid))
    if view:  # a view masks stored slots out; it never marks an empty slot valid
        assert bool(jnp.all(p.valid <= (p.origin >= 0)))
    else:
        assert bool(jnp.all((p.origin >= 0) == p.valid))
    for leaf in jax.tree.leaves(p.data):
        assert bool(jnp.all(jnp.isfinite(leaf)))


@pytest.mark.parametrize("name", ["replace", "accumulate", "accumulate_subsample"])
@pytest.mark.parametrize("n0,n,gens", [(5, 5, 4), (3, 7, 3), (8, 2, 5)])
def test_regimes_keep_shapes_and_masks(name, n0, n, gens):
    factory = {"replace": R.replace, "accumulate": R.accumulate,
               "accumulate_subsample": R.accumulate_subsample}[name]
    regime = factory(n0, n, gens)
    real = {"x": jnp.arange(n0 * 2, dtype=jnp.float32).reshape(n0, 2),
            "y": jnp.ones((n0,), jnp.int32)}
    pool = regime.init(real)
    shapes = jax.tree.map(lambda a: (a.shape, a.dtype), pool)
    _consistent(pool)
    assert int(pool.count) == n0
    root = jax.random.key(1)
    for g in range(1, gens):
        k_data, k_update, k_view = jax.random.split(jax.random.fold_in(root, g), 3)
        synth = {"x": jax.random.normal(k_data, (regime.n_synthetic, 2), jnp.float32),
                 "y": jnp.full((regime.n_synthetic,), g, jnp.int32)}
        pool = jax.jit(regime.update)(pool, synth, jnp.int32(g), k_update, {})
        assert jax.tree.map(lambda a: (a.shape, a.dtype), pool) == shapes
        _consistent(pool)
        assert not bool(pool.overflow)
        expected = n if name == "replace" else n0 + g * n
        assert int(pool.count) == expected
        # synthetic rows carry their generation tag and their data
        tagged = np.asarray(pool.origin) == g
        assert tagged.sum() == n
        np.testing.assert_array_equal(np.asarray(pool.data["y"])[tagged], g)
        view = regime.view(pool, k_view, {})
        _consistent(view, view=True)
        if name == "accumulate_subsample":
            assert int(view.count) == min(n0, expected)
            # the view gathers the chosen rows into a pool of capacity m = n0: distinct valid
            # rows of the pool, with their origin tags
            assert view.capacity == regime.fit_capacity == n0
            vrows = np.asarray(view.data["x"])[np.asarray(view.valid)]
            prows = {tuple(r): int(o) for r, o in zip(np.asarray(pool.data["x"]),
                                                       np.asarray(pool.origin), strict=True)
                     if o >= 0}
            assert len({tuple(r) for r in vrows}) == int(view.count)
            origins = np.asarray(view.origin)[np.asarray(view.valid)]
            assert all(prows[tuple(r)] == o for r, o in zip(vrows, origins, strict=True))
        else:
            assert int(view.count) == expected
        # the regime's pool metrics (O(1) for accumulate) equal the mask-weighted ones
        got, want = regime.metrics(view), P.pool_metrics(view)
        assert {k: float(v) for k, v in got.items()} == {k: float(v) for k, v in want.items()}


def test_accumulate_capacity_is_exact_and_overflow_is_flagged():
    regime = R.accumulate(4, 3, 3)  # capacity 4 + 2 * 3
    assert regime.capacity == 10
    pool = regime.init(jnp.zeros((4, 1), jnp.float32))
    for g in (1, 2):
        pool = regime.update(pool, jnp.full((3, 1), float(g), jnp.float32), jnp.int32(g),
                             jax.random.key(g), {})
    assert int(pool.count) == 10 and not bool(pool.overflow)
    before = pool
    pool = regime.update(pool, jnp.full((3, 1), 9.0, jnp.float32), jnp.int32(3),
                         jax.random.key(3), {})
    assert bool(pool.overflow)
    np.testing.assert_array_equal(pool.data, before.data)  # the dropped write changed nothing
    np.testing.assert_array_equal(pool.valid, before.valid)


def test_write_over_valid_slots_keeps_the_count():
    # O(k) write: the count grows by the newly valid slots only; tags and data of the block change
    pool = P.init_pool(jnp.zeros((3, 1), jnp.float32), capacity=6)
    pool = P.write(pool, jnp.ones((3, 1), jnp.float32), jnp.int32(1), jnp.int32(2))
    _consistent(pool)
    assert int(pool.count) == 4 and pool.origin.tolist() == [0, 2, 2, 2, -1, -1]
    np.testing.assert_array_equal(np.asarray(pool.data[:, 0]), [0, 1, 1, 1, 0, 0])
    dropped = P.write(pool, jnp.full((3, 1), 5.0), jnp.int32(4), jnp.int32(3))  # 4 + 3 > 6
    assert bool(dropped.overflow) and int(dropped.count) == 4
    np.testing.assert_array_equal(np.asarray(dropped.data), np.asarray(pool.data))
    np.testing.assert_array_equal(np.asarray(dropped.origin), np.asarray(pool.origin))


def test_sample_indices_only_valid_and_uniform():
    valid = jnp.array([False, True, False, True, True, False, False, True])
    idx = np.asarray(P.sample_indices(jax.random.key(0), valid, 40_000))
    assert set(np.unique(idx)) == {1, 3, 4, 7}
    freq = np.bincount(idx, minlength=8)[[1, 3, 4, 7]] / idx.size
    # multinomial standard error of each frequency is sqrt(p(1-p)/N) = 0.0022; allow 4 of them
    np.testing.assert_allclose(freq, 0.25, atol=4 * np.sqrt(0.25 * 0.75 / idx.size))


def test_subsample_mask_is_uniform_without_replacement():
    valid = jnp.arange(12) < 9
    keys = jax.random.split(jax.random.key(0), 6000)
    masks = np.asarray(jax.vmap(lambda k: P.subsample_mask(k, valid, 3))(keys))
    assert (masks.sum(1) == 3).all() and not masks[:, 9:].any()
    incl = masks[:, :9].mean(0)  # each valid slot is chosen with probability 3/9
    np.testing.assert_allclose(incl, 1 / 3, atol=4 * np.sqrt((1 / 3) * (2 / 3) / 6000))


def test_masked_moments_ignore_invalid_slots():
    x = jax.random.normal(jax.random.key(0), (10, 3), jnp.float32)
    w = (jnp.arange(10) < 6).astype(jnp.float32)
    poisoned = jnp.where(w[:, None] > 0, x, 1e6)
    mu, cov = P.masked_cov(poisoned, w, ddof=1)
    np.testing.assert_allclose(mu, np.mean(np.asarray(x[:6]), 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cov, np.cov(np.asarray(x[:6]).T), rtol=1e-4, atol=1e-5)


def test_init_pool_rejects_real_data_larger_than_capacity():
    with pytest.raises(ValueError, match="capacity=2"):
        P.init_pool(jnp.zeros((3, 1), jnp.float32), capacity=2)
