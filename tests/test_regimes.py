"""The regimes (``collapse_jax.regimes``): every regime keeps the pool's shapes, masks and origin
tags; accumulate's capacity is exact and its overflow is flagged; the gathered
``accumulate_subsample`` view holds m distinct valid rows; fixed_real_mix, fresh_real_mix and
window keep exactly the rows they promise; and on the Gaussian the real-data mixes prevent
collapse (Monte-Carlo, within 4 standard errors computed from the chains themselves).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from collapse_jax import MODELS, StaticConfig, run_sweep, theory
from collapse_jax import pool as P
from collapse_jax import regimes as R
from collapse_jax.pool import Pool
from collapse_jax.regimes import fixed_real_mix, fresh_real_mix, window


def _consistent(pool: Pool) -> None:
    assert int(pool.count) == int(jnp.sum(pool.valid))
    assert bool(jnp.all(jnp.where(pool.valid, pool.origin >= 0, pool.origin == -1)))
    assert not bool(pool.overflow)


def _consistent_or_view(p: P.Pool, view: bool = False) -> None:
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
    _consistent_or_view(pool)
    assert int(pool.count) == n0
    root = jax.random.key(1)
    for g in range(1, gens):
        k_data, k_update, k_view = jax.random.split(jax.random.fold_in(root, g), 3)
        synth = {"x": jax.random.normal(k_data, (regime.n_synthetic, 2), jnp.float32),
                 "y": jnp.full((regime.n_synthetic,), g, jnp.int32)}
        pool = jax.jit(regime.update)(pool, synth, jnp.int32(g), k_update, {})
        assert jax.tree.map(lambda a: (a.shape, a.dtype), pool) == shapes
        _consistent_or_view(pool)
        assert not bool(pool.overflow)
        expected = n if name == "replace" else n0 + g * n
        assert int(pool.count) == expected
        # synthetic rows carry their generation tag and their data
        tagged = np.asarray(pool.origin) == g
        assert tagged.sum() == n
        np.testing.assert_array_equal(np.asarray(pool.data["y"])[tagged], g)
        view = regime.view(pool, k_view, {})
        _consistent_or_view(view, view=True)
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


# ----------------------------------------------------------------------------------------------
# the regimes of issue 3: fixed_real_mix, fresh_real_mix, window


def test_fixed_real_mix_keeps_d0_and_round_lam_n0_synthetic():
    n0, lam_max = 7, 3.0
    r = fixed_real_mix(n0, lam_max)
    assert r.n_synthetic == 21 and r.capacity == 28
    real = jnp.arange(n0, dtype=jnp.float32)[:, None]
    lams = jnp.array([0.0, 0.5, 1.0, 2.9, 3.0], jnp.float32)
    upd = jax.jit(jax.vmap(r.update, in_axes=(None, None, None, None, 0)))
    pool = r.init(real)
    for g in (1, 2, 3):
        synth = jnp.full((r.n_synthetic, 1), 100.0 + g)
        out = upd(pool, synth, jnp.int32(g), None, {"lam": lams})
        for i, lam in enumerate(np.asarray(lams)):
            p = jax.tree.map(lambda x, i=i: x[i], out)
            _consistent(p)
            k = int(np.round(lam * n0))
            assert int(p.count) == n0 + k
            assert p.data.shape == (28, 1) and p.valid.shape == (28,)
            np.testing.assert_array_equal(p.data[:n0, 0], np.arange(n0))
            assert set(np.asarray(p.origin[p.valid]).tolist()) <= {0, g}
            assert int(jnp.sum(p.origin == g)) == k  # only the newest synthetic block
        pool = jax.tree.map(lambda x: x[2], out)  # continue the lam = 1 chain


def test_fresh_real_mix_fraction_and_origin():
    n0, n = 5, 8
    r = fresh_real_mix(n0, n)
    assert r.n_fresh == n and r.capacity == 8
    pool = r.init(jnp.zeros((n0, 2)))
    synth, fresh = jnp.ones((n, 2)), jnp.full((n, 2), -1.0)
    for rho in (0.0, 0.25, 0.5, 1.0):
        p = jax.jit(r.update)(pool, synth, jnp.int32(3), None,
                              {"rho": jnp.float32(rho)}, fresh=fresh)
        _consistent(p)
        k = int(round(rho * n))
        assert int(p.count) == n
        assert int(jnp.sum(p.origin == 0)) == k and int(jnp.sum(p.origin == 3)) == n - k
        np.testing.assert_array_equal(np.asarray(p.data[:, 0] < 0), np.asarray(p.origin == 0))


@pytest.mark.parametrize("keep_real", [True, False])
@pytest.mark.parametrize("k", [1, 3])
def test_window_keeps_exactly_the_last_k_generations(k, keep_real):
    n0, n, gens = 4, 3, 12
    r = window(n0, n, gens, k, keep_real)
    pool = r.init(jnp.zeros((n0, 1)))
    upd = jax.jit(r.update)
    for g in range(1, gens):
        pool = upd(pool, jnp.full((n, 1), float(g)), jnp.int32(g), None, {})
        _consistent(pool)
        assert pool.data.shape == (r.capacity, 1)
        want = set(range(max(1, g - k + 1), g + 1)) | ({0} if keep_real else set())
        assert set(np.asarray(pool.origin[pool.valid]).tolist()) == want
        # every kept synthetic generation is complete, and its slots hold its own data
        for h in want - {0}:
            sel = np.asarray(pool.valid & (pool.origin == h))
            assert sel.sum() == n
            np.testing.assert_array_equal(np.asarray(pool.data[sel, 0]), float(h))
        assert int(pool.count) == n * len(want - {0}) + (n0 if keep_real else 0)


def test_window_wide_equals_accumulate_size():
    r = window(5, 2, generations=6, k=100)
    assert r.capacity == 5 + 5 * 2


# ----------------------------------------------------------------------------------------------
# mixing regimes on the Gaussian (Monte-Carlo)


def _sweep(static, hp, chains, root=0):
    spec = MODELS[static.model]
    values = {**spec.hparams, **hp}
    full = {k: np.broadcast_to(np.asarray(v, np.float32), (chains,)) for k, v in values.items()}
    return run_sweep(static, jax.random.key(root), np.arange(chains), full, {})


def _within(mc: np.ndarray, expected: np.ndarray, k: float = 4.0) -> None:
    """Column means of ``mc`` [chains, G] within ``k`` standard errors of ``expected`` [G]."""
    mean = mc.mean(axis=0)
    se = mc.std(axis=0, ddof=1) / np.sqrt(mc.shape[0])
    z = (mean - expected) / np.maximum(se, 1e-12)
    assert np.all(np.abs(z) < k), f"z-scores {np.round(z, 2)}"


def test_fixed_real_mix_keeps_trace_ratio_near_one_for_every_lam():
    """Bertrand et al.: with D0 in every fit the covariance cannot collapse.

    With m = lam n0 synthetic points, E Sigma_g >= (Sigma_D0 + lam (m-1)/m E Sigma_{g-1})/(1 + lam)
    (the pooled MLE plus a nonnegative between-group term), whose fixed point is
    Sigma_D0 / (1 + 1/n0) for every lam: the trace ratio stays >= n0/(n0+1) of generation 0 up to
    Monte-Carlo error, while replace decays as ((n-1)/n)^(g+1).
    """
    n0, gens, chains = 50, 60, 200
    lams = np.float32([0.5, 1.0, 2.0, 10.0])
    static = StaticConfig(model="gaussian", regime="fixed_real_mix", n0=n0, n=n0, d=2,
                          generations=gens, n_test=10, lam_max=10.0)
    res = _sweep(static, {"lam": np.repeat(lams, chains)}, len(lams) * chains)
    tr = res.metrics["trace_ratio"].reshape(len(lams), chains, gens)
    for i, lam in enumerate(lams):
        ratio = tr[i, :, -1] / tr[i, :, 0]
        lo = n0 / (n0 + 1) - 4 * ratio.std(ddof=1) / np.sqrt(chains)
        assert ratio.mean() > lo, (lam, ratio.mean(), lo)
        assert ratio.mean() < 1.2, (lam, ratio.mean())


def test_fresh_real_mix_prevents_collapse():
    n, gens, chains = 50, 60, 200
    static = StaticConfig(model="gaussian", regime="fresh_real_mix", n0=n, n=n, d=2,
                          generations=gens, n_test=10)
    rhos = np.float32([0.0, 0.5])
    res = _sweep(static, {"rho": np.repeat(rhos, chains)}, 2 * chains)
    tr = res.metrics["trace_ratio"].reshape(2, chains, gens)
    frac = res.metrics["real_fraction"].reshape(2, chains, gens)
    np.testing.assert_allclose(frac[:, :, 1:].mean(axis=(1, 2)), [0.0, 0.5])
    # rho = 0 is replace: the closed form holds, and it decays
    _within(tr[0], theory.gaussian_trace_ratio("replace", n, np.arange(gens)))
    assert tr[0, :, -1].mean() < 0.5
    # rho = 0.5: fixed point of x = rho + (1 - rho) q x is rho / (1 - (1 - rho) q) ~ 0.98
    assert tr[1, :, -1].mean() > 0.9
