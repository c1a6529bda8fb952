"""The GMM family (``collapse_jax.models.gmm``): EM never decreases the log-likelihood; replace
collapses and accumulate does not; point-mass and dead components are flagged with finite
metrics, and wide rank-deficient components stay finite (the relative ridge).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import collapse_jax as cj
from collapse_jax import MODELS, StaticConfig, run_sweep
from collapse_jax.data.synthetic import true_means
from collapse_jax.models import gmm as G
from collapse_jax.results import flag_counts
from collapse_jax.validate import statics


def _sweep(static, hp, chains, root=0):
    spec = MODELS[static.model]
    values = {**spec.hparams, **hp}
    full = {k: np.broadcast_to(np.asarray(v, np.float32), (chains,)) for k, v in values.items()}
    return run_sweep(static, jax.random.key(root), np.arange(chains), full, {})


def test_gmm_em_increases_loglik_monotonically():
    """EM never decreases the (weighted) log-likelihood on a fixed pool (float64, ridge 1e-6)."""
    with jax.enable_x64(True):
        key = jax.random.key(4)
        k_x, k_init = jax.random.split(key)
        means = true_means(3, 2, 3.0).astype(jnp.float64)
        c = jax.random.randint(k_x, (300,), 0, 3)
        x = means[c] + 0.7 * jax.random.normal(jax.random.fold_in(k_x, 1), (300, 2),
                                               jnp.float64)
        w = (jnp.arange(300) < 250).astype(jnp.float64)  # 50 invalid slots
        for diagonal in (False, True):
            p = G.kmeans_pp(k_init if not diagonal else jax.random.fold_in(k_init, 1),
                            x, w, 4, diagonal)

            def body(p, _, diagonal=diagonal):
                p = G.em_step(x, w, p, diagonal)
                return p, G.mixture_loglik(x, w, p)

            ll0 = G.mixture_loglik(x, w, p)
            p, path = jax.jit(lambda p, body=body: jax.lax.scan(body, p, None, length=60))(p)
            lls = np.concatenate([[float(ll0)], np.asarray(path)])
            assert lls.dtype == np.float64
            inc = np.diff(lls)
            assert np.all(inc >= -1e-9 * abs(lls[-1])), inc.min()
            assert lls[-1] > lls[0]
            if diagonal:
                off = np.asarray(p["covs"])[:, 0, 1]
                assert np.all(off == 0)


def test_gmm_replace_collapses_accumulate_does_not():
    base = dict(model="gmm", n0=20, n=20, d=2, generations=25, n_test=50)
    rep = _sweep(StaticConfig(regime="replace", **base), {}, 24).metrics
    acc = _sweep(StaticConfig(regime="accumulate", **base), {}, 24).metrics
    for m in rep.values():
        assert np.all(np.isfinite(m))
    assert rep["trace_ratio"][:, -1].mean() < 0.6 * rep["trace_ratio"][:, 0].mean()
    assert acc["trace_ratio"][:, -1].mean() > 0.85 * acc["trace_ratio"][:, 0].mean()


# ----------------------------------------------------------------------------------------------
# degenerate chains


def _run(**kw):
    exp = cj.Experiment(name="degenerate", **{"n_test": 16, **kw})
    r = cj.run_experiment(exp)
    t = r.table
    assert len(t) == len(statics(exp)) * exp.seeds * len(
        exp.hparam_grid(cj.MODELS[exp.model].hparams)) * exp.generations
    assert t["collapsed"].dtype == bool and t["nonfinite"].dtype == bool
    return r, t


GMM_COLUMNS = ["nll", "weight_entropy", "trace_ratio", "means_dist", "pool_size"]


@pytest.fixture(scope="module")
def gmm_point_masses():
    """One compile: 3 components in 2-D, n = 30 under replace, scale in {0, 1} x sigma in
    {0.5, 100} (radius 3: separated clusters, and one wide blob whose rank-deficient float32
    covariances the ridge must keep positive definite), 6 seeds each."""
    return _run(model="gmm", regimes=("replace",), seeds=6, generations=8, n=30, d=2,
                options={"components": 3}, hparams={"scale": (0.0, 1.0), "sigma": (0.5, 100.0)})


def _composition_entropies(n: int, k: int) -> dict[tuple[int, ...], float]:
    """Entropy of the weights ``c / n`` of every way to split n points over k components."""
    out = {}
    for c in itertools.product(range(n + 1), repeat=k - 1):
        if sum(c) <= n:
            counts = tuple(sorted((*c, n - sum(c))))
            p = np.array([x for x in counts if x]) / n
            out[counts] = float(-(p * np.log(p)).sum())
    return out


def test_gmm_point_mass_components_are_flagged_and_finite(gmm_point_masses):
    # scale = 0: every synthetic point is the mean of the component it was drawn from, so from
    # generation 1 on the pool is at most 3 distinct points and EM puts each live component on
    # one of them with covariance = the ridge alone (collapsed, models/gmm.py); components whose
    # point was not drawn get zero responsibility and die (weight exactly 0, no NaN).
    from collapse_jax.models.gmm import RIDGE

    r, t = gmm_point_masses
    assert np.isfinite(t[GMM_COLUMNS].to_numpy()).all() and not t["nonfinite"].any()
    zero = t[t.scale == 0.0]
    np.testing.assert_array_equal(zero["collapsed"], zero["generation"] >= 1)
    assert not t[t.generation == 0]["collapsed"].any()
    # independent evidence that each live component sits on its own point: the weights are
    # exactly counts / n, so the weight entropy is that of a split of the 30 points (distinct
    # splits' entropies differ by >= 6.5e-5; float32 gives ~1e-6)
    splits = _composition_entropies(30, 3)
    later = zero[zero.generation >= 1]
    dead = 0
    for h in later["weight_entropy"]:
        match = [c for c, e in splits.items() if abs(e - h) < 1e-5]
        assert len(match) == 1, h
        dead += 0 in match[0]
    assert dead > 0, "some component must have lost all responsibility"
    assert (later["nll"] > 1e4).all()  # test points far from 3 ridge-wide atoms
    # a point mass of the ridge alone: the mixture's variance is that of the atoms + 2 RIDGE
    assert (later["trace_ratio"] > 2 * RIDGE).all()
    counts = flag_counts(t, r.swept)
    assert counts["chains"] == 24 and counts["nonfinite"] == 0
    assert counts["collapsed"] >= 12  # the 12 scale = 0 chains, plus any scale = 1 singularity


def test_gmm_wide_rank_deficient_components_stay_finite(gmm_point_masses):
    # sigma = 100: components covering 2 of the atoms (or a few points) have rank-1 float32
    # covariances with eigenvalues ~1e4, whose rounding (~1e-3) swamps an absolute 1e-6 ridge;
    # without the relative ridge of gmm.regularize their Cholesky factor is NaN.
    r, t = gmm_point_masses
    wide = t[t.sigma == 100.0]
    assert np.isfinite(wide[GMM_COLUMNS].to_numpy()).all() and not wide["nonfinite"].any()
    assert (wide[wide.generation >= 1].query("scale == 0")["nll"] > 1e8).all()


def test_gmm_single_collapsed_component_and_a_dead_one():
    # Hand-built pool: 10 points around A, 10 around B, 1 point at C; components start on A, B, C
    # and a 4th far away at D with weight 1e-3. EM: C's component shrinks onto its single point
    # (covariance -> the ridge: collapsed), D's gets zero responsibility (weight exactly 0, mean
    # and covariance kept), A's and B's stay healthy. The flag is set by C alone.
    from collapse_jax.models import gmm as G

    rng = np.random.default_rng(1)
    a, b, c, far = [np.float32(v) for v in ([-3, 0], [3, 0], [0, 5], [50, 50])]
    x = np.concatenate([a + 0.3 * rng.normal(size=(10, 2)), b + 0.3 * rng.normal(size=(10, 2)),
                        c[None, :]]).astype(np.float32)
    w = jnp.ones((21,), jnp.float32)
    start = {"weights": jnp.float32([0.45, 0.45, 0.099, 0.001]),
             "means": jnp.asarray(np.stack([a, b, c, far])),
             "covs": jnp.broadcast_to(jnp.eye(2, dtype=jnp.float32), (4, 2, 2))}
    p, _ = jax.jit(lambda p: jax.lax.scan(
        lambda q, _: (G.em_step(jnp.asarray(x), w, q), None), p, None, length=20))(start)
    p = jax.tree.map(np.asarray, p)
    assert all(np.isfinite(v).all() for v in p.values())
    np.testing.assert_allclose(p["weights"], [10 / 21, 10 / 21, 1 / 21, 0.0], rtol=1e-5)
    assert p["weights"][3] == 0.0
    np.testing.assert_array_equal(p["means"][3], far)
    np.testing.assert_array_equal(p["covs"][3], np.eye(2))
    np.testing.assert_allclose(p["means"][2], c, atol=1e-6)
    np.testing.assert_allclose(p["covs"][2], G.RIDGE * np.eye(2), atol=1e-9)
    spreads = np.trace(p["covs"], axis1=1, axis2=2)
    assert (spreads[:2] > 0.05).all()

    static = cj.StaticConfig(model="gmm", regime="replace", n0=21, n=21, d=2, generations=2,
                             n_test=21, options=(("components", 4),))
    model = cj.make_model(static)
    real = cj.RealData(jnp.asarray(x), jnp.asarray(x), {})
    params = jax.tree.map(jnp.asarray, p)
    ev = model.evaluate(params, real, {})
    assert all(np.isfinite(float(v)) for v in ev.values())
    assert bool(model.collapsed(params, real, {}))
    healthy = {**params, "weights": jnp.float32([0.5, 0.5, 0.0, 0.0])}  # C's component dead
    assert not bool(model.collapsed(healthy, real, {}))
