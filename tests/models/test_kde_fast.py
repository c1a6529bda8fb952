"""The KDE's exact incremental fast path (``accumulate``, fixed bandwidth) against the full-pool
path: same chain, same keys, same metrics to float32 rounding.

The fast path carries per-test-point running log kernel sums (real and synthetic slots apart) and
running moments, and samples by a closed-form inverse CDF over the valid prefix. With a real
weight whose cumulative sums are exact in float32 (a power of two) it draws the same indices as
the full path, so both chains hold bit-identical pools; with any other weight the fast fit is fed
the full path's pools.

Tolerance: the two paths sum the same kernel values in a different order (one log-sum-exp over
the capacity vs. one per block merged by ``logaddexp``; a two-pass covariance vs. Chan's merge),
so they agree to float32 rounding: ``RTOL = 2e-6`` (~ 16 ulp; measured at most 2.8e-7) relative
on ``nll`` and ``var_ratio`` over every generation; ``bandwidth`` is equal.
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import collapse_jax as cj
from collapse_jax import chain as C
from collapse_jax.config import ConfigError
from collapse_jax.models.kde_kernels import merge_moments, moments, prefix_weighted_indices
from collapse_jax.pool import init_pool, origin_weights, weighted_indices, write

RTOL = 2e-6
METRICS = ("nll", "var_ratio", "bandwidth", "pool_size", "real_fraction", "collapsed")


def _static(fast: bool, regime="accumulate", bandwidth="fixed", n0=12, n=7, gens=9):
    return cj.StaticConfig(model="kde", regime=regime, n0=n0, n=n, d=2, generations=gens,
                           n_test=23, options=(("bandwidth", bandwidth), ("fast_path", fast)))


def _hp(**kw):
    return cj.hparams_from({"h": 0.1, "scale": 1.0, "real_weight": 1.0, "noise": 0.05, **kw})


def _is_fast(static) -> bool:
    model = cj.make_model(static)
    real = cj.RealData(jnp.zeros((static.n0, 2)), jnp.zeros((static.n_test, 2)), {})
    return "lse_synth" in model.init(None, real, _hp())


def test_fast_path_is_selected_only_where_exact():
    assert _is_fast(_static(True))
    assert not _is_fast(_static(False))
    for regime in ("replace", "accumulate_subsample", "window", "fixed_real_mix"):
        assert not _is_fast(_static(True, regime=regime)), regime
    for rule in ("scott", "silverman"):  # the bandwidth changes with the pool: not incremental
        assert not _is_fast(_static(True, bandwidth=rule)), rule


def test_fast_path_option_validates():
    exp = cj.Experiment(name="k", model="kde", regimes=("accumulate",), n=8, d=2, n_test=4,
                        generations=3, seeds=2)
    cj.validate(dataclasses.replace(exp, options={"fast_path": False}))
    with pytest.raises(ConfigError, match=r"options.fast_path='yes': allowed values are"):
        cj.validate(dataclasses.replace(exp, options={"fast_path": "yes"}))
    with pytest.raises(ConfigError, match=r"options.fastpath: not an option of model 'kde'"):
        cj.validate(dataclasses.replace(exp, options={"fastpath": True}))


def _run(fast: bool, hp: dict, seeds: int):
    chain = cj.make_chain(_static(fast))
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(7), i))(jnp.arange(seeds))
    run = jax.jit(jax.vmap(lambda k, h: cj.run_chain(chain, k, h, {})))
    return run(keys, hp)


def test_fast_path_equals_full_pool_path_on_the_same_chain():
    # real_weight in {1, 2, 0.5, 0.25} (exact cumulative sums: the same sampled indices) crossed
    # with scale in {1, 0.49, 2.25}; n0 != n, so the blocks sit at n0 + (g - 1) n
    grid = list(itertools.product([1.0, 2.0, 0.5, 0.25], [1.0, 0.49, 2.25]))
    hp = {k: jnp.asarray(v, jnp.float32) for k, v in _hp().items()}
    hp["real_weight"] = jnp.asarray([rw for rw, _ in grid], jnp.float32)
    hp["scale"] = jnp.asarray([s for _, s in grid], jnp.float32)
    hp = {k: jnp.broadcast_to(v, (len(grid),)) for k, v in hp.items()}
    fast_state, fast = _run(True, hp, len(grid))
    full_state, full = _run(False, hp, len(grid))
    # the same samples every generation: bit-identical pools
    np.testing.assert_array_equal(np.asarray(fast_state.pool.data),
                                  np.asarray(full_state.pool.data))
    np.testing.assert_array_equal(np.asarray(fast_state.pool.valid),
                                  np.asarray(full_state.pool.valid))
    for name in METRICS:
        a, b = np.asarray(fast[name]), np.asarray(full[name])
        assert a.shape == (len(grid), 9) and np.isfinite(a).all(), name
        if name in ("nll", "var_ratio"):
            np.testing.assert_allclose(a, b, rtol=RTOL, err_msg=name)
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)
    # the chains moved: later generations differ from generation 0
    assert (np.abs(np.asarray(fast["nll"])[:, -1] - np.asarray(fast["nll"])[:, 1]) > 1e-3).all()


def test_fast_fit_on_the_full_paths_pools_any_real_weight():
    # real_weight 0.3 (inexact cumulative sums, so sampling may differ in the last ulp): drive
    # the chain with the full path and fold each of its pools into the fast path's state
    hp = _hp(real_weight=0.3, scale=0.8)
    full_chain, fast_chain = cj.make_chain(_static(False)), cj.make_chain(_static(True))
    key = jax.random.key(11)
    real = C.draw_real(full_chain, key, hp, {})
    state, m_full = jax.jit(lambda k, h, r: C.init(full_chain, k, h, r))(key, hp, real)
    fast_params = fast_chain.model.init(None, real, hp)
    fit = jax.jit(fast_chain.model.fit)
    ev = jax.jit(fast_chain.model.evaluate)
    step = jax.jit(lambda s, g, k, h, r: C.step(full_chain, s, g, k, h, r))
    for g in range(9):
        if g:
            state, m_full = step(state, jnp.int32(g), key, hp, real)
        fast_params = fit(None, state.pool, fast_params, hp)
        m_fast = ev(fast_params, real, hp)
        for name in ("nll", "var_ratio"):
            np.testing.assert_allclose(float(m_fast[name]), float(m_full[name]), rtol=RTOL,
                                       err_msg=f"{name} at g={g}")
        assert float(m_fast["bandwidth"]) == float(m_full["bandwidth"])
        assert int(fast_params["seen"]) == int(state.pool.count)
    # folding the same pool again adds nothing (the slots were seen)
    again = fit(None, state.pool, fast_params, hp)
    assert float(ev(again, real, hp)["nll"]) == float(ev(fast_params, real, hp)["nll"])


@pytest.mark.parametrize("rw", [1.0, 2.0, 0.5, 0.25])
def test_prefix_indices_equal_the_cumsum_draw_for_exact_weights(rw):
    n0, ns, capacity, num = 13, 40, 80, 4000
    pool = init_pool(jnp.zeros((n0, 1)), capacity)
    pool = write(pool, jnp.ones((ns, 1)), jnp.int32(n0), jnp.int32(1))
    w = origin_weights(pool, rw)
    u = jax.random.uniform(jax.random.key(3), (num,))
    want = weighted_indices(u, w)
    got = prefix_weighted_indices(u, n0, jnp.int32(ns), jnp.float32(rw))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_prefix_indices_frequencies_any_weight():
    # real_weight 0.3: P(real slot i) = 0.3 / W, P(synthetic slot) = 1 / W, W = 0.3 n0 + ns
    n0, ns, num, rw = 5, 7, 120_000, 0.3
    u = jax.random.uniform(jax.random.key(4), (num,))
    idx = np.asarray(prefix_weighted_indices(u, n0, jnp.float32(ns), jnp.float32(rw)))
    assert idx.min() >= 0 and idx.max() < n0 + ns
    p = np.r_[np.full(n0, rw), np.ones(ns)] / (rw * n0 + ns)
    freq = np.bincount(idx, minlength=n0 + ns)
    assert stats.chisquare(freq, p * num).pvalue > 1e-3


def test_no_synthetic_slot_draws_only_real():
    u = jnp.concatenate([jax.random.uniform(jax.random.key(5), (500,)), jnp.ones((1,))])
    idx = prefix_weighted_indices(u, 4, jnp.int32(0), jnp.float32(0.7))  # u = 1: rounding
    assert set(np.asarray(idx).tolist()) == {0, 1, 2, 3}


def test_merged_moments_equal_the_weighted_covariance():
    x = jax.random.normal(jax.random.key(6), (30, 2)) * jnp.array([[1.0, 3.0]]) + 5.0
    w = jnp.where(jnp.arange(30) < 10, 0.3, 1.0)
    m = moments(x[:10], w[:10])
    for lo, hi in ((10, 17), (17, 17), (17, 30)):  # an empty block merges as nothing
        m = merge_moments(m, moments(x[lo:hi] if hi > lo else x[:1], w[lo:hi] if hi > lo
                                     else jnp.zeros((1,))))
    xs, ws = np.asarray(x, np.float64), np.asarray(w, np.float64)
    mean = ws @ xs / ws.sum()
    scatter = ((xs - mean) * ws[:, None]).T @ (xs - mean)
    np.testing.assert_allclose(float(m["weight"]), ws.sum(), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m["mean"]), mean, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(m["scatter"]), scatter, rtol=1e-4)
