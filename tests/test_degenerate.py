"""Degenerate chains keep running with finite, well-defined metrics, and say so in their flags.

For each classical family: variance collapsing to 0, singular covariances / rank-deficient
designs, all points identical, and NaN/inf (a hyperparameter whose square overflows float32). The
results table holds every chain x generation row; ``collapsed`` and ``nonfinite`` are per
generation; the summary counts the chains that hit each.
"""

from __future__ import annotations

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import collapse_jax as cj
from collapse_jax.pool import init_pool
from collapse_jax.results import flag_counts
from collapse_jax.validate import statics

METRIC_COLUMNS = {
    "gaussian": ["trace_ratio", "logdet_ratio", "mean_error", "w2", "nll", "pool_size"],
    "linear_regression": ["test_error", "test_mse", "pool_size"],
}


def _run(**kw):
    exp = cj.Experiment(name="degenerate", **{"n_test": 16, **kw})
    r = cj.run_experiment(exp)
    t = r.table
    assert len(t) == len(statics(exp)) * exp.seeds * len(
        exp.hparam_grid(cj.MODELS[exp.model].hparams)) * exp.generations
    assert t["collapsed"].dtype == bool and t["nonfinite"].dtype == bool
    return r, t


@pytest.fixture(scope="module")
def gaussian_extremes():
    """One compile: n = 3 points in d = 6 (singular covariances), sigma in {2, 1e25} x scale in
    {0, 1}, 2 seeds each."""
    return _run(model="gaussian", regimes=("replace",), seeds=2, generations=5, n=3, d=6,
                hparams={"scale": (0.0, 1.0), "sigma": (2.0, 1e25)})


def test_gaussian_all_points_identical_is_flagged_and_finite(gaussian_extremes):
    # scale = 0: every synthetic point equals the fitted mean, so from generation 1 on the
    # covariance is 0 (rank 0, up to the rounding of a float32 mean).
    r, t = gaussian_extremes
    t = t[t.sigma == 2.0]
    assert np.isfinite(t[METRIC_COLUMNS["gaussian"]].to_numpy()).all()
    assert not t["nonfinite"].any()
    np.testing.assert_array_equal(t["collapsed"], (t["generation"] >= 1) & (t["scale"] == 0))
    later = t[(t.generation >= 1) & (t.scale == 0)]
    # 0 up to the rounding of the mean of identical float32 points
    assert (later["trace_ratio"] < 1e-12).all() and (later["trace_ratio"] == 0.0).any()
    # log det is floored at d * log(float32 tiny), not -inf
    floor = 6 * np.log(np.finfo(np.float32).tiny) - 6 * np.log(4.0)
    assert (later["logdet_ratio"] >= floor * (1 + 1e-6)).all()
    assert (later["logdet_ratio"] < -60).all()
    np.testing.assert_allclose(later[later.trace_ratio == 0]["logdet_ratio"], floor, rtol=1e-6)
    # W2 from a point mass at mu to N(0, sigma^2 I) is sqrt(|mu|^2 + d sigma^2)
    np.testing.assert_allclose(later["w2"], np.sqrt(later["mean_error"] + 6 * 4.0), rtol=1e-5)
    # the mean is frozen (up to float32 rounding) once the points are identical
    for _, chain in later.groupby("seed"):
        np.testing.assert_allclose(chain["mean_error"], chain["mean_error"].iloc[0], rtol=1e-5)


def test_gaussian_overflow_is_flagged_nonfinite_and_the_chain_keeps_running(gaussian_extremes):
    # sigma^2 = 1e50 overflows float32: every metric is NaN/inf; the rows are still all there.
    r, t = gaussian_extremes
    bad, good = t[t.sigma > 1e3], t[t.sigma < 1e3]
    assert bad["nonfinite"].all() and not good["nonfinite"].any()
    assert not bad["collapsed"].any()
    # NaN / inf appear only where flagged
    values = t[METRIC_COLUMNS["gaussian"]].to_numpy()
    assert (~np.isfinite(values).all(axis=1) <= t["nonfinite"].to_numpy()).all()
    counts = flag_counts(t, r.swept)
    assert counts == {"chains": 8, "collapsed": 2, "nonfinite": 4,
                      "by_regime": {"replace": {"chains": 8, "collapsed": 2, "nonfinite": 4}}}


def test_gaussian_variance_collapsing_to_zero_under_replace_stays_finite():
    # n = 2, d = 1: the variance is multiplied by chi2_1 / 2 each generation (E log = -1.96), so
    # within 150 generations it underflows float32 to exactly 0 in every chain.
    r, t = _run(model="gaussian", regimes=("replace",), seeds=8, generations=150, n=2, d=1)
    assert np.isfinite(t[METRIC_COLUMNS["gaussian"]].to_numpy()).all()
    assert not t["nonfinite"].any()
    assert not t[t.generation == 0]["collapsed"].any()
    last = t[t.generation == 149]
    assert last["collapsed"].all() and (last["trace_ratio"] == 0.0).all()
    assert flag_counts(t)["collapsed"] == 8


def test_gaussian_singular_covariance_n_below_d(gaussian_extremes):
    # n = 3 points in d = 6: the fitted covariance has rank <= 2 at every generation.
    r, t = gaussian_extremes
    t = t[(t.sigma == 2.0) & (t.scale == 1.0)]
    assert np.isfinite(t[METRIC_COLUMNS["gaussian"]].to_numpy()).all()
    assert not t["nonfinite"].any()
    g0 = t[t.generation == 0]
    assert not g0["collapsed"].any()  # singular is not collapsed: the trace is still O(1)
    assert (g0["logdet_ratio"] < -50).all()  # floored eigenvalues: large negative, finite


def _linreg_model_and_pool(x, y, capacity):
    static = cj.StaticConfig(model="linear_regression", regime="replace", n0=x.shape[0],
                             n=x.shape[0], d=x.shape[1], generations=2, n_test=4,
                             options=(("fast_path", False),))  # a pool of rows
    model = cj.make_model(static)
    pool = init_pool({"x": jnp.asarray(x), "y": jnp.asarray(y)}, capacity)
    return model, pool


@pytest.mark.parametrize("rank", [0, 1, 2, 3])
def test_linreg_rank_deficient_design_gives_min_norm_fit_and_flag(rank):
    rng = np.random.default_rng(rank)
    d, rows = 3, 6
    basis = rng.normal(size=(max(rank, 1), d))
    coef = rng.normal(size=(rows, max(rank, 1)))
    x = (coef @ basis if rank else np.zeros((rows, d))).astype(np.float32)
    y = rng.normal(size=rows).astype(np.float32)
    model, pool = _linreg_model_and_pool(x, y, capacity=rows + 2)
    params = jax.jit(model.fit)(jax.random.key(0), pool, model.init(None, None, None), {})
    assert int(params["rank"]) == rank
    collapsed = model.collapsed(params, None, None)
    assert bool(collapsed) == (rank < d)
    # minimum-norm least squares; rcond drops the singular values float32 rounding created
    want = np.linalg.pinv(x.astype(np.float64), rcond=1e-4) @ y.astype(np.float64)
    # float32 tolerance: the Gram matrix squares the condition number
    np.testing.assert_allclose(np.asarray(params["w"]), want, rtol=2e-3, atol=2e-4)


@pytest.fixture(scope="module")
def linreg_subsample():
    """One compile: T = d = 3, accumulate_subsample, sigma in {10, 1e30}, 12 seeds each."""
    return _run(model="linear_regression", regimes=("accumulate_subsample",), seeds=12,
                generations=6, n=3, d=3, hparams={"sigma": (10.0, 1e30)})


def test_linreg_subsample_with_repeated_rows_is_flagged_and_finite(linreg_subsample):
    # T = d = 3: each fit subsamples 3 of the accumulated copies of the 3 design rows, often
    # drawing the same row twice, so the design is rank-deficient; the min-norm fit keeps going.
    r, t = linreg_subsample
    t = t[t.sigma == 10.0]
    assert np.isfinite(t[METRIC_COLUMNS["linear_regression"]].to_numpy()).all()
    assert not t["nonfinite"].any()
    assert not t[t.generation == 0]["collapsed"].any()  # D0 itself has full rank
    assert t[t.generation > 0]["collapsed"].mean() > 0.2
    counts = flag_counts(t)
    assert 0 < counts["collapsed"] <= 12 and counts["nonfinite"] == 0


def test_linreg_overflow_is_flagged_nonfinite(linreg_subsample):
    r, t = linreg_subsample
    assert t[t.sigma > 1e3]["nonfinite"].all() and not t[t.sigma < 1e3]["nonfinite"].any()


def test_summary_json_and_cli_report_flag_counts(gaussian_extremes, tmp_path):
    from collapse_jax.cli import format_flags
    from collapse_jax.results import write_results

    r, _ = gaussian_extremes
    assert format_flags(r) == (
        "flags (chains of 8 that hit each at any generation): collapsed 2, nonfinite 4 "
        "(replace: collapsed 2, nonfinite 4)")
    write_results(r, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["complete"] is True
    assert summary["flags"]["collapsed"] == 2 and summary["flags"]["nonfinite"] == 4
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert table["collapsed"].dtype == bool and len(table) == 8 * 5
    assert "collapsed" not in r.metrics and "nonfinite" not in r.metrics  # not plotted


# ----------------------------------------------------------------------------------------------
# categorical


def test_categorical_one_outcome_left_is_absorbing_and_finite():
    # K = 3 outcomes, n = 4 samples per generation under replace: every chain fixates on one
    # outcome (Wright-Fisher absorption, ~2 n generations on average) and stays there.
    r, t = _run(model="categorical", regimes=("replace",), seeds=8, generations=40, n=4, d=3)
    cols = ["entropy", "collision", "survivors", "tv", "missing_mass"]
    assert np.isfinite(t[cols].to_numpy()).all() and not t["nonfinite"].any()
    np.testing.assert_array_equal(t["collapsed"], t["survivors"] == 1)
    for _, chain in t.groupby("seed"):
        flags = chain.sort_values("generation")["collapsed"].to_numpy()
        first = np.argmax(flags) if flags.any() else len(flags)
        assert flags[first:].all(), "one outcome left must be absorbing"
    last = t[t.generation == 39]
    assert last["collapsed"].all()
    np.testing.assert_allclose(last["entropy"], 0.0, atol=1e-7)
    np.testing.assert_allclose(last["collision"], 1.0, rtol=1e-6)
    assert flag_counts(t)["collapsed"] == 8


# ----------------------------------------------------------------------------------------------
# kde


KDE_COLUMNS = ["nll", "bandwidth", "var_ratio", "pool_size"]


@pytest.fixture(scope="module")
def kde_identical():
    """One compile: Scott's bandwidth, n = 4 under replace, scale in {0, 1}, 6 seeds each."""
    return _run(model="kde", regimes=("replace",), seeds=6, generations=30, n=4, d=2,
                options={"bandwidth": "scott"}, hparams={"scale": (0.0, 1.0)})


def test_kde_all_points_identical_is_flagged_and_finite(kde_identical):
    # scale = 0: every synthetic point is a copy of a pool point, so under replace the 4 points
    # drift (Wright-Fisher) until all are copies of one; Scott's bandwidth of that pool is 0,
    # floored at MIN_BANDWIDTH, which keeps the NLL finite (huge). The flag is the KDE's variance
    # over the test set's at or below COLLAPSE_FLOOR (models/kde.py); the expectation here comes
    # from another column: a pool of identical points is exactly the one whose rule-of-thumb
    # bandwidth sits at the floor (any two distinct moon points give h >> 1e-6).
    from collapse_jax.models.kde_kernels import MIN_BANDWIDTH

    r, t = kde_identical
    assert np.isfinite(t[KDE_COLUMNS].to_numpy()).all() and not t["nonfinite"].any()
    identical = t["bandwidth"].to_numpy() == np.float32(MIN_BANDWIDTH)
    np.testing.assert_array_equal(t["collapsed"], identical)
    assert not t[t.generation == 0]["collapsed"].any()  # D0: 4 distinct points
    assert not t[t.scale == 1.0]["collapsed"].any()  # kernel noise keeps the points apart
    assert t[(t.scale == 0.0) & (t.generation == 29)]["collapsed"].all()
    assert (t[~identical]["bandwidth"] > 1e-3).all()  # far from the floor when not identical
    for _, chain in t[t.scale == 0.0].groupby("seed"):
        chain = chain.sort_values("generation")
        flags = chain["collapsed"].to_numpy()
        first = int(np.argmax(flags))
        assert flags[first:].all(), "one point left is absorbing"
        frozen = chain.iloc[first:]
        # the same single point for ever: metrics frozen at their floor values
        assert frozen[["nll", "var_ratio"]].nunique().max() == 1
        assert (frozen["nll"] > 1e9).all() and (frozen["var_ratio"] < 1e-9).all()
    counts = flag_counts(t, r.swept)
    assert counts == {"chains": 12, "collapsed": 6, "nonfinite": 0,
                      "by_regime": {"replace": {"chains": 12, "collapsed": 6, "nonfinite": 0}}}


@pytest.mark.parametrize("bandwidth", ["scott", "silverman", "fixed"])
def test_kde_collapsed_hook_on_identical_and_distinct_points(bandwidth):
    # Hand-built pools (no chain): 5 copies of one point vs. the same with one point moved.
    from collapse_jax.models.kde_kernels import COLLAPSE_FLOOR, MIN_BANDWIDTH

    static = cj.StaticConfig(model="kde", regime="replace", n0=5, n=5, d=2, generations=2,
                             n_test=8, options=(("bandwidth", bandwidth),))
    model = cj.make_model(static)
    rng = np.random.default_rng(0)
    test = jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)
    t_trace = np.trace(np.cov(np.asarray(test, np.float64).T, bias=True))
    real = cj.RealData(test, test, {})
    same = np.tile(np.float32([[0.3, -0.7]]), (5, 1))
    moved = same.copy()
    moved[0] += 0.5
    for h in (0.1, 1e-7):
        hp = cj.hparams_from({"h": h, "scale": 1.0, "real_weight": 1.0, "noise": 0.05})
        for points, distinct in ((same, 1), (moved, 2)):
            pool = init_pool(jnp.asarray(points), 6)
            params = model.fit(None, pool, model.init(None, real, hp), hp)
            ev = model.evaluate(params, real, hp)
            assert all(np.isfinite(float(v)) for v in ev.values())
            h_fit = float(params["h"])
            if bandwidth == "fixed":
                assert h_fit == np.float32(h)
            elif distinct == 1:
                assert h_fit == np.float32(MIN_BANDWIDTH)
            else:
                assert h_fit > 0.05
            spread = 0.0 if distinct == 1 else 0.25 * 0.8 * 0.2 * 2  # 1 of 5 points moved
            want = (spread + 2 * h_fit**2) / t_trace <= COLLAPSE_FLOOR
            assert bool(model.collapsed(params, real, hp)) is bool(want), (h, distinct)
            if bandwidth != "fixed":
                assert bool(want) is (distinct == 1)


# ----------------------------------------------------------------------------------------------
# gmm


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


def test_vae_nonfinite_loss_is_flagged_and_the_chain_keeps_running():
    # lr = 1e30: Adam's first step throws the weights to ~1e30 and the loss overflows to inf/NaN.
    # The sizes match tests/test_properties.py (one compiled program for both).
    ex = dict(cj.MODELS["vae"].example)
    options = ex.pop("options", {})
    r, t = _run(model="vae", regimes=("accumulate_subsample",), seeds=2, generations=3,
                options=options, hparams={"lr": (1e-3, 1e30)}, chunk_size=4, **ex)
    bad, good = t[t.lr > 1], t[t.lr < 1]
    assert bad.groupby("seed")["nonfinite"].any().all()
    assert not good["nonfinite"].any()
    assert np.isfinite(good[list(r.metrics)].to_numpy(np.float64)).all()
