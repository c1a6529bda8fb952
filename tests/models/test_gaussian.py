"""The Gaussian family (``collapse_jax.models.gaussian``, its sample path): the QR root keeps small
directions; no LAPACK eigensolver unless w2 is asked for, and unselected metrics are not
computed; the NLL from moments equals the per-point likelihood; the fit matches a float64
reference in float32 and float64; the 1-D unbiased variance keeps its mean while its median
falls; degenerate chains (identical points, overflow, variance collapsing to 0, n < d) keep
running with finite metrics and say so in their flags.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import collapse_jax as cj
from collapse_jax import StaticConfig, make_chain, run_chain, run_sweep
from collapse_jax import chain as C
from collapse_jax.config import hparams_from
from collapse_jax.metrics import pivoted_cholesky
from collapse_jax.models.gaussian_fast import COLLAPSE_FLOOR, moment_nll
from collapse_jax.pool import masked_cov, masked_root
from collapse_jax.results import flag_counts
from collapse_jax.validate import statics


def _spread_points(cond, n=100, d=10, batch=300, seed=0):
    """float32 point clouds whose covariance has eigenvalues spanning ``cond``, with the float64
    log det of their (MLE) covariance."""
    rs = np.random.default_rng(seed)
    q = np.linalg.qr(rs.standard_normal((batch, d, d)))[0]
    sd = np.sqrt(np.geomspace(1.0, 1.0 / cond, d))
    x = np.asarray(((rs.standard_normal((batch, n, d)) * sd) @ np.swapaxes(q, 1, 2)) + 3.0,
                   np.float32)
    xc = x.astype(np.float64) - x.mean(axis=1, keepdims=True, dtype=np.float64)
    truth = np.linalg.slogdet(np.swapaxes(xc, 1, 2) @ xc / n)[1]
    return x, truth


@pytest.mark.parametrize("cond", [1e2, 1e6, 1e8])
def test_sample_path_root_keeps_small_directions(cond):
    """The sample path's fit (``masked_root``: a QR of the centred points) gives log det of the
    covariance to 3e-3 (float64 truth, worst of 300 clouds of 100 points in d = 10, offset by 3)
    up to covariance condition number 1e8 (3e-4 measured). The replace chain reaches ~1e6 to 1e7
    by generation 100 at n = 100 (float32 logdet_ratio was -81.2 +- 1.2 against numpy's -67.5 +-
    0.2 when the root came from the scatter)."""
    x, truth = _spread_points(cond)
    w = jnp.ones(x.shape[1], jnp.float32)
    root = jax.jit(jax.vmap(lambda p: masked_root(p, w)[1]))(jnp.asarray(x))
    logdet = np.sum(np.log(np.diagonal(np.asarray(root, np.float64), axis1=1, axis2=2) ** 2), 1)
    assert np.abs(logdet - truth).max() < 3e-3, np.abs(logdet - truth).max()


def test_scatter_root_loses_small_directions():
    """Negative control for the check above: the pivoted Cholesky of the float32 scatter (the
    former fit) is off by more than 1 in log det at condition number 1e8 (71 measured; 0.05 at
    1e6, 0.9 at 1e7)."""
    x, truth = _spread_points(1e8)
    w = jnp.ones(x.shape[1], jnp.float32)
    piv = jax.jit(jax.vmap(lambda p: pivoted_cholesky(masked_cov(p, w)[1])[1]))(jnp.asarray(x))
    logdet = np.sum(np.log(np.maximum(np.asarray(piv, np.float64), np.finfo(np.float32).tiny)), 1)
    assert np.abs(logdet - truth).max() > 1.0


def test_sample_path_needs_no_lapack_eigensolver_without_w2():
    """The sample path samples with the QR root and takes logdet_ratio from its diagonal: no
    LAPACK symmetric eigensolver (``syevd``) unless w2 is asked for (XLA drops unused metrics)."""
    def hlo(metrics):
        static = StaticConfig(model="gaussian", regime="replace", n0=12, n=12, d=3,
                              generations=3, n_test=8, metrics=metrics,
                              options=(("fast_path", False),))
        chain = make_chain(static)
        f = jax.jit(lambda k, h: run_chain(chain, k, h, {})[1])
        h = hparams_from({"sigma": 1.0, "scale": 1.0})
        return f.lower(jax.random.key(0), h).compile().as_text().lower()

    assert "syev" not in hlo(("trace_ratio", "mean_error", "logdet_ratio"))
    assert "syev" in hlo(("w2",))  # the check can fail


@pytest.mark.parametrize("n", [5, 30])
def test_moment_nll_matches_per_point_likelihood(n):
    """The NLL from the test points' moments (jnp Cholesky and triangular inverse, no LAPACK)
    equals scipy's per-point log-density under the same ridged covariance (float64): to 1e-4
    relative for covariances of 30 points in d = 10; to 2e-2 for 5 points (singular: only the
    ridge and floor keep it finite, the ridged covariance has condition number 3e6 to 8e6, so
    float32 rounding alone is ~eps * cond = 0.2 of the smallest direction; measured 0.2-0.8%,
    the LAPACK Cholesky and solve it replaced 0.1-2.7%)."""
    d, m = 10, 200
    rs = np.random.default_rng(n)
    test = rs.standard_normal((m, d))
    truth = {"cov": jnp.eye(d), "test_mean": jnp.asarray(test.mean(0), jnp.float32),
             "test_cov": jnp.asarray(np.cov(test.T, bias=True), jnp.float32)}
    for seed in range(5):
        x = np.random.default_rng(seed).standard_normal((n, d)) * np.exp(rs.standard_normal(d))
        mean, cov = x.mean(0), np.cov(x.T, bias=True).astype(np.float32).astype(np.float64)
        got = float(moment_nll(jnp.asarray(mean, jnp.float32), jnp.asarray(cov, jnp.float32),
                                jnp.float32(np.trace(cov)), truth))
        ridged = cov + (1e-6 * np.trace(cov) / d + COLLAPSE_FLOOR * d / d) * np.eye(d)
        ref = -stats.multivariate_normal(mean, ridged).logpdf(test).mean()
        assert abs(got - ref) <= (1e-4 if n > d else 2e-2) * abs(ref), (got, ref)


def test_unselected_metrics_are_not_computed():
    """``Experiment.metrics``: only those columns, and no eigendecomposition left in the
    compiled fast-path chain when neither w2 nor the eigh-based metrics are asked for."""
    exp = cj.Experiment(name="sel", model="gaussian", regimes=("replace",), seeds=3,
                        generations=3, n=8, d=3, n_test=8, metrics=("trace_ratio", "mean_error"))
    table = cj.run_experiment(exp).table
    assert {"trace_ratio", "mean_error", "pool_size", "collapsed"} <= set(table.columns)
    assert not {"w2", "nll", "logdet_ratio"} & set(table.columns)

    def hlo(metrics):
        static = StaticConfig(model="gaussian", regime="replace", n0=8, n=8, d=3,
                              generations=3, n_test=8, metrics=metrics)
        chain = make_chain(static)
        f = jax.jit(lambda k, h: cj.run_chain(chain, k, h, {})[1])
        h = cj.hparams_from({"sigma": 1.0, "scale": 1.0})
        return f.lower(jax.random.key(0), h).compile().as_text().lower()

    assert "eig" not in hlo(("trace_ratio", "mean_error"))
    assert "eig" in hlo(())  # the check can fail: w2 needs eigvalsh


SEEDS = 1000


def _sweep(regime, n, d, fast, root, seeds=SEEDS, options=(), hp=None, generations=21):
    static = StaticConfig(
        model="gaussian", regime=regime, n0=n, n=n, d=d, generations=generations, n_test=16,
        options=tuple(sorted({"fast_path": fast, **dict(options)}.items())),
    )
    hp = {"sigma": 1.0, "scale": 1.0, **(hp or {})}
    return run_sweep(static, jax.random.key(root), np.arange(seeds), hp, {}).metrics


def test_unbiased_1d_mean_preserved_median_falls():
    """THEORY.md: 1-D unbiased variance under replace, E = sigma^2 every g, median ~ 0.37 at 99."""
    m = _sweep("replace", 100, 1, True, root=5, seeds=4000, options={"unbiased": True},
               generations=100)["trace_ratio"]
    assert np.all(m > 0)
    early = m[:, 10]  # the mean is preserved; at g = 99 it is too heavy-tailed to test
    assert abs(early.mean() - 1.0) < 4 * early.std(ddof=1) / np.sqrt(len(early))
    x = m[:, 99]
    # median of a product of 99 independent chi2_99/99 factors (x the g=0 one): log-normal
    # approximation exp(100 * E log(chi2_99/99)); the standard error of a sample median is
    # ~ 1.25 sd / sqrt(N) on the log scale.
    log_med = 100 * (jax.scipy.special.digamma(99 / 2) + np.log(2 / 99))
    sd_log = np.log(x).std(ddof=1)
    assert abs(np.log(np.median(x)) - float(log_med)) < 4 * 1.25 * sd_log / np.sqrt(len(x))
    assert np.median(x) < 0.45


# Relative tolerances of a generation-0 fit against a float64 numpy reference on the same data:
# a few hundred ulps of the dtype (sums over n points, an eigendecomposition for OLS).
RTOL = {"float32": 2e-5, "float64": 1e-12}


DTYPES = ["float32", "float64"]


def _x64(dtype: str):
    return jax.enable_x64(dtype == "float64")


def _chain_g0(model: str, dtype: str, **sizes):
    static = cj.StaticConfig(model=model, regime="replace", generations=2, dtype=dtype, **sizes)
    chain = cj.make_chain(static)
    hp = hparams_from(cj.MODELS[model].hparams, dtype=jnp.dtype(dtype))

    @jax.jit
    def g0(key, hp):
        real = C.draw_real(chain, key, hp, {})
        state, metrics = C.init(chain, key, hp, real)
        return real, state.params, metrics

    return g0(jax.random.key(7), hp)


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_fit_matches_float64_reference(dtype, fast_path):
    with _x64(dtype):
        real, params, metrics = _chain_g0("gaussian", dtype, n0=50, n=50, d=4, n_test=20,
                                          options=(("fast_path", fast_path),))
        # the fast path carries a lower-triangular root of the covariance instead
        cov = params["root"] @ params["root"].T if fast_path else params["cov"]
        assert cov.dtype == jnp.dtype(dtype) and metrics["w2"].dtype == jnp.dtype(dtype)
        x = np.asarray(real.train, np.float64)
        mean, cov = np.asarray(params["mean"]), np.asarray(cov)
        trace_ratio = float(metrics["trace_ratio"])
    ref_mean = x.mean(axis=0)
    ref_cov = np.cov(x.T, bias=True)
    np.testing.assert_allclose(mean, ref_mean, rtol=RTOL[dtype], atol=RTOL[dtype])
    np.testing.assert_allclose(cov, ref_cov, rtol=RTOL[dtype], atol=RTOL[dtype])
    np.testing.assert_allclose(trace_ratio, np.trace(ref_cov) / 4.0, rtol=RTOL[dtype])


# ----------------------------------------------------------------------------------------------
# degenerate chains


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
