"""The regimes of issue 3 (fixed_real_mix, fresh_real_mix, window), their hyperparameters and
validation, and the pool helpers the classical families use."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import collapse_jax as cj
from collapse_jax import ConfigError, Experiment, StaticConfig, validate
from collapse_jax.chain import make_chain
from collapse_jax.pool import Pool, origin_weights, sample_weighted_indices
from collapse_jax.regimes import fixed_real_mix, fresh_real_mix, regime_hparams, window
from collapse_jax.validate import statics


def _consistent(pool: Pool) -> None:
    assert int(pool.count) == int(jnp.sum(pool.valid))
    assert bool(jnp.all(jnp.where(pool.valid, pool.origin >= 0, pool.origin == -1)))
    assert not bool(pool.overflow)


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
# configuration


def _exp(**kw):
    base = dict(name="t", model="gaussian", regimes=("fixed_real_mix",), n=10, d=2, n_test=5,
                generations=3, seeds=2)
    return Experiment(**{**base, **kw})


def test_regime_hparams_are_accepted_and_ranged():
    assert regime_hparams(("replace", "fixed_real_mix", "fresh_real_mix")) == {
        "lam": 1.0, "rho": 0.5}
    validate(_exp(lam_max=10.0, hparams={"lam": (0.5, 10.0)}))
    with pytest.raises(ConfigError, match=r"hparams.lam=2.0: must lie in \[0, lam_max=1.0\]"):
        validate(_exp(hparams={"lam": (0.5, 2.0)}))
    with pytest.raises(ConfigError, match=r"hparams.rho=1.5: must lie in \[0, 1\]"):
        validate(_exp(regimes=("fresh_real_mix",), hparams={"rho": 1.5}))
    with pytest.raises(ConfigError, match=r"hparams.rho: not a hyperparameter .*allowed: lam, "):
        validate(_exp(hparams={"rho": 0.5}))  # rho belongs to fresh_real_mix only
    with pytest.raises(ConfigError, match="lam_max=0"):
        validate(_exp(lam_max=0))
    with pytest.raises(ConfigError, match="window=0"):
        validate(_exp(regimes=("window",), window=0))
    e = cj.override(_exp(), ["lam=0.25", "window=4", "lam_max=2.0"])
    assert e.hparams["lam"] == 0.25 and e.window == 4 and statics(e)[0].lam_max == 2.0


def test_fresh_real_mix_needs_a_source_with_fresh():
    static = StaticConfig(model="linear_regression", regime="fresh_real_mix", n0=12, n=12, d=3,
                          generations=2, n_test=4)
    with pytest.raises(ConfigError, match="cannot draw fresh real data"):
        make_chain(static)
    with pytest.raises(ConfigError, match="source='linear': the source cannot draw"):
        validate(Experiment(name="t", model="linear_regression", regimes=("fresh_real_mix",),
                            n=12, d=3))


def test_hparam_grid_includes_regime_defaults():
    from collapse_jax.experiment import run_experiment

    exp = _exp(lam_max=2.0, hparams={"lam": (0.5, 2.0)}, generations=2)
    r = run_experiment(exp)
    t = r.table
    assert set(t["lam"]) == {0.5, 2.0}
    last = t[t.generation == 1]
    # pool size after the update: n0 + round(lam n0)
    np.testing.assert_array_equal(last["pool_size"], 10 + np.round(last["lam"] * 10))
    assert dataclasses.asdict(statics(r.experiment)[0])["lam_max"] == 2.0
    # window has no hyperparameter: the default grid of a window experiment is the model's
    assert r.experiment.hparam_grid({"sigma": 1.0}) == [{"lam": 0.5, "sigma": 1.0},
                                                        {"lam": 2.0, "sigma": 1.0}]
