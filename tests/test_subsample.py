"""``pool.prefix_subsample`` (Floyd's algorithm, vectorised) and the gathered
``accumulate_subsample`` view: the loop's exact output, every m-subset equally likely, distinct
indices, the ``count < m`` case."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from collapse_jax import regimes as R
from collapse_jax.pool import prefix_subsample

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


def test_view_gathers_m_distinct_valid_rows():
    n0, n, gens, m = 5, 3, 6, 4
    regime = R.accumulate_subsample(n0, n, gens, m)
    assert regime.fit_capacity == m and regime.capacity == n0 + (gens - 1) * n
    rows = jnp.arange(n0, dtype=jnp.float32)[:, None]
    pool = regime.init(rows)
    seen = []
    for g in range(1, gens):
        block = (100.0 * g + jnp.arange(n, dtype=jnp.float32))[:, None]
        pool = regime.update(pool, block, jnp.int32(g), None, {})
        view = regime.view(pool, jax.random.key(g), {})
        assert view.data.shape == (m, 1) and view.valid.shape == (m,)
        assert int(view.count) == m and bool(view.valid.all())
        got = np.asarray(view.data[:, 0])
        assert len(set(got.tolist())) == m  # distinct rows ...
        assert set(got.tolist()) <= set(np.asarray(pool.data[pool.valid, 0]).tolist())  # valid
        # each gathered row keeps its origin tag
        want = np.where(got < 100, 0, got // 100).astype(np.int32)
        np.testing.assert_array_equal(np.asarray(view.origin), want)
        seen.append(got)
    assert len({tuple(r) for r in seen}) > 1  # different keys, different subsets


def test_view_of_a_pool_smaller_than_m():
    regime = R.accumulate_subsample(3, 2, 4, m=6)
    pool = regime.init(jnp.arange(3, dtype=jnp.float32)[:, None])
    view = regime.view(pool, jax.random.key(0), {})
    assert int(view.count) == 3
    assert view.valid.tolist() == [True, True, True, False, False, False]
    assert view.origin.tolist() == [0, 0, 0, -1, -1, -1]
    np.testing.assert_array_equal(np.asarray(view.data[:3, 0]), [0.0, 1.0, 2.0])
