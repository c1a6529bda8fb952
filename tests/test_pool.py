"""The pool (``collapse_jax.pool``): writes keep count, mask and origin tags consistent and a write
past the capacity is dropped and flagged; only valid slots are ever sampled (uniform, weighted by
origin, or an m-subset without replacement); masked moments ignore invalid slots.
``prefix_subsample`` (Floyd's algorithm, vectorised) gives the sequential loop's exact output,
every m-subset equally likely, distinct indices, and handles ``count < m``.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from collapse_jax import pool as P
from collapse_jax.pool import origin_weights, prefix_subsample, sample_weighted_indices
from collapse_jax.regimes import fixed_real_mix


def _consistent(p: P.Pool, view: bool = False) -> None:
    assert int(p.count) == int(jnp.sum(p.valid))
    if view:  # a view masks stored slots out; it never marks an empty slot valid
        assert bool(jnp.all(p.valid <= (p.origin >= 0)))
    else:
        assert bool(jnp.all((p.origin >= 0) == p.valid))
    for leaf in jax.tree.leaves(p.data):
        assert bool(jnp.all(jnp.isfinite(leaf)))


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


def test_origin_weights_and_weighted_sampling():
    p = fixed_real_mix(3, 1.0)
    pool = p.update(p.init(jnp.zeros((3, 1))), jnp.ones((3, 1)), jnp.int32(1), None,
                    {"lam": jnp.float32(2 / 3)})
    w = origin_weights(pool, 0.5)
    np.testing.assert_allclose(np.asarray(w), [0.5, 0.5, 0.5, 1, 1, 0])
    idx = sample_weighted_indices(jax.random.key(1), w, 20000)
    freq = np.bincount(np.asarray(idx), minlength=6) / 20000
    assert freq[5] == 0.0
    # probabilities 0.5/3.5 and 1/3.5: 4 standard errors of a binomial frequency
    for i, pi in enumerate([1 / 7, 1 / 7, 1 / 7, 2 / 7, 2 / 7]):
        assert abs(freq[i] - pi) < 4 * np.sqrt(pi * (1 - pi) / 20000)


# ----------------------------------------------------------------------------------------------
# prefix_subsample (Floyd's algorithm, vectorised)


# Chi-square uniformity tests below: each at ALPHA, Bonferroni over the 3 cases.
ALPHA = 1e-3 / 3


def floyd_loop(keys, count: int, m: int) -> list[list[int]]:
    """Floyd's sequential loop (Bentley & Floyd 1987) on the draws ``prefix_subsample`` makes."""
    top = count - m + np.arange(m)
    maxval = jnp.maximum(jnp.asarray(top, jnp.int32), 0) + 1
    draws = np.asarray(jax.vmap(
        lambda k: jax.random.randint(k, (m,), 0, maxval, dtype=jnp.int32))(keys))
    if count < m:
        return [list(range(m))] * len(draws)
    out = []
    for t in draws:
        chosen: list[int] = []
        taken: set[int] = set()
        for i in range(m):
            v = int(top[i]) if int(t[i]) in taken else int(t[i])
            chosen.append(v)
            taken.add(v)
        out.append(chosen)
    return out


@pytest.mark.parametrize("count,m", [(1, 1), (5, 5), (9, 4), (12, 11), (40, 16), (3, 7),
                                     (1000, 600), (99_100, 1000)])
@pytest.mark.parametrize("bound", [None, "capacity"])
def test_vectorised_equals_the_sequential_loop(count, m, bound):
    # the vectorised collision recursion gives the loop's subset, in the loop's order, with both
    # sorts (combined int32 key when capacity * m < 2^31, two-operand stable sort otherwise)
    capacity = max(count, m) if bound else None
    f = jax.jit(jax.vmap(lambda k: prefix_subsample(k, jnp.int32(count), m, capacity)))
    keys = jax.random.split(jax.random.key(count * 7 + m), 64 if m <= 40 else 4)
    want = floyd_loop(jax.random.clone(keys), count, m)  # the same keys (clone: no reuse error)
    assert np.asarray(f(keys)).tolist() == want


def test_many_collisions_still_distinct():
    # m close to count: most steps collide, and chains of collisions are long
    count, m = 1030, 1024
    idx = np.asarray(jax.vmap(lambda k: prefix_subsample(k, jnp.int32(count), m, count))(
        jax.random.split(jax.random.key(2), 50)))
    assert ((idx >= 0) & (idx < count)).all()
    assert all(len(set(r)) == m for r in idx.tolist())


@pytest.mark.parametrize("count,m,bound", [(7, 3, 7), (6, 4, None), (8, 1, 8)])
def test_every_subset_equally_likely(count, m, bound):
    draws = 300 * len(list(itertools.combinations(range(count), m)))
    keys = jax.random.split(jax.random.key(count * 10 + m), draws)
    idx = np.asarray(jax.vmap(lambda k: prefix_subsample(k, jnp.int32(count), m, bound))(keys))
    assert ((idx >= 0) & (idx < count)).all()
    assert all(len(set(r)) == m for r in idx.tolist())
    subsets = {s: i for i, s in enumerate(itertools.combinations(range(count), m))}
    freq = np.bincount([subsets[tuple(sorted(r))] for r in idx.tolist()], minlength=len(subsets))
    # H0: uniform over the C(count, m) subsets; 300 expected per cell
    assert stats.chisquare(freq).pvalue > ALPHA, freq


def test_uniformity_test_can_fail():
    # negative control: a biased subset draw (the first m - 1 slots always, then one more at
    # random) is rejected by the same chi-square test
    count, m = 7, 3
    rng = np.random.default_rng(0)
    rows = [(0, 1, int(rng.integers(2, count))) for _ in range(300 * 35)]
    subsets = {s: i for i, s in enumerate(itertools.combinations(range(count), m))}
    freq = np.bincount([subsets[r] for r in rows], minlength=len(subsets))
    assert stats.chisquare(freq).pvalue < ALPHA


def test_short_pool_takes_every_valid_slot():
    idx = prefix_subsample(jax.random.key(1), jnp.int32(2), 4)
    assert idx.tolist() == [0, 1, 2, 3]  # slots >= count are masked invalid by the view
