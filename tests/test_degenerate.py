"""Degenerate chains keep running with finite, well-defined metrics, and say so in their flags.

For each classical family: variance collapsing to 0, singular covariances / rank-deficient
designs, all points identical, and NaN/inf (a hyperparameter whose square overflows float32). The
results table holds every chain x generation row; ``collapsed`` and ``nonfinite`` are per
generation; the summary counts the chains that hit each.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import collapse_jax as cj
from collapse_jax.experiment import flag_counts
from collapse_jax.pool import init_pool

METRIC_COLUMNS = {
    "gaussian": ["trace_ratio", "logdet_ratio", "mean_error", "w2", "nll", "pool_size"],
    "linear_regression": ["test_error", "test_mse", "pool_size"],
}


def _run(**kw):
    exp = cj.Experiment(name="degenerate", **{"n_test": 16, **kw})
    r = cj.run_experiment(exp)
    t = r.table
    assert len(t) == len(exp.statics()) * exp.seeds * len(
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
                             n=x.shape[0], d=x.shape[1], generations=2, n_test=4)
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
