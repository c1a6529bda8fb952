"""The Gaussian's exact fast path (sufficient statistics) against the sample-based path and theory.

The fast path draws the mean and scatter matrix of n samples (Normal and Bartlett-Wishart) instead
of the samples, and accumulates running statistics instead of points. It must give the same
distribution of every per-generation metric: two-sample Kolmogorov-Smirnov tests over many
vmapped seeds (independent root keys for the two paths), a negative control showing the tests
can fail, and both paths against the closed forms of THEORY.md (``theory.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import collapse_jax as cj
from collapse_jax import StaticConfig, make_chain, run_sweep, theory
from collapse_jax.metrics import psd_cholesky
from collapse_jax.models.gaussian_fast import bartlett_factor, chisquare, merge, statistics

SEEDS = 1000
GENS = (1, 5, 20)
# Means are compared with theory only at early generations: later, the trace ratio is a product
# of many random factors (median/mean ~ 0.16 at g = 20 for n = 10), its sample mean is biased low
# and its standard error unreliable at 1000 seeds (THEORY.md); the KS tests cover g = 20.
EARLY = (1, 5)
METRICS = ("trace_ratio", "mean_error", "logdet_ratio", "w2", "nll")
# Bonferroni over every KS test in this file (2 regimes x 2 shapes x 5 metrics x 3 generations).
ALPHA = 1e-3 / 60


def _sweep(regime, n, d, fast, root, seeds=SEEDS, options=(), hp=None, generations=21):
    static = StaticConfig(
        model="gaussian", regime=regime, n0=n, n=n, d=d, generations=generations, n_test=16,
        options=tuple(sorted({"fast_path": fast, **dict(options)}.items())),
    )
    hp = {"sigma": 1.0, "scale": 1.0, **(hp or {})}
    return run_sweep(static, jax.random.key(root), np.arange(seeds), hp, {}).metrics


def test_fast_path_is_selected_only_where_exact():
    base = dict(model="gaussian", n0=8, n=8, d=2, generations=3, n_test=4)
    for regime, fast, expect in [("replace", True, 1), ("accumulate", True, 1),
                                 ("accumulate_subsample", True, 8 + 2 * 8),
                                 ("accumulate", False, 8 + 2 * 8)]:
        chain = make_chain(StaticConfig(regime=regime, options=(("fast_path", fast),), **base))
        assert chain.regime.capacity == expect, (regime, fast)


def _scatter(s):
    return np.asarray(s["factor"][0] @ s["factor"][0].T)


def test_merge_matches_direct_statistics():
    x = jax.random.normal(jax.random.key(1), (37, 4)) * 3.0 + 5.0
    m = merge(merge(statistics(x[:5]), statistics(x[5:20])), statistics(x[20:]))
    direct = statistics(x)
    for k in ("count", "mean"):
        np.testing.assert_allclose(m[k], direct[k], rtol=2e-5, atol=2e-4)
    xc = np.asarray(x, np.float64) - np.asarray(x, np.float64).mean(0)
    np.testing.assert_allclose(_scatter(m), xc.T @ xc, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(_scatter(direct), xc.T @ xc, rtol=1e-4, atol=1e-3)
    assert np.allclose(np.triu(np.asarray(m["factor"][0]), 1), 0.0)  # lower triangular
    # fewer rows than dimensions: a singular scatter of rank 2
    few = statistics(x[:3])
    x3 = np.asarray(x[:3], np.float64)
    x3c = x3 - x3.mean(0)
    np.testing.assert_allclose(_scatter(few), x3c.T @ x3c, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("rank", [6, 3, 0])
def test_psd_cholesky_full_and_rank_deficient(rank):
    """L L^T = S and L lower triangular, for full rank (== LAPACK) and singular S (no NaN)."""
    z = jax.random.normal(jax.random.key(rank), (6, rank))
    s = z @ z.T if rank else jnp.zeros((6, 6))
    chol = np.asarray(psd_cholesky(s))
    assert np.isfinite(chol).all() and np.allclose(np.triu(chol, 1), 0.0)
    np.testing.assert_allclose(chol @ chol.T, s, atol=2e-5 * max(float(jnp.max(s)), 1.0))
    if rank == 6:
        np.testing.assert_allclose(chol, np.linalg.cholesky(np.asarray(s, np.float64)),
                                   rtol=1e-3, atol=1e-4)
    assert np.sum(np.abs(np.diag(chol)) > 1e-3) == rank


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


def test_chisquare_matches_scipy():
    df = np.array([1.0, 2.0, 9.0, 999.0], np.float32)
    x = np.asarray(jax.vmap(lambda k: chisquare(k, jnp.asarray(df)))(
        jax.random.split(jax.random.key(3), 5000)))
    for j, k in enumerate(df):
        p = stats.kstest(x[:, j], stats.chi2(k).cdf).pvalue
        assert p > 1e-4, f"df={k}: KS p={p:.2e}"


@pytest.mark.parametrize("d,dof", [(4, 9), (5, 2)])
def test_bartlett_is_wishart(d, dof):
    """E[W] = dof I and Var(W_ij) = dof (i != j), 2 dof (i == j); rank min(dof, d)."""
    keys = jax.random.split(jax.random.key(2), 20000)
    a = jax.vmap(lambda k: bartlett_factor(k, d, dof))(keys)
    w = np.asarray(a @ jnp.swapaxes(a, 1, 2), np.float64)
    mean, se = w.mean(0), w.std(0, ddof=1) / np.sqrt(len(w))
    assert np.all(np.abs(mean - dof * np.eye(d)) < 4 * se + 1e-9)
    var = w.var(0, ddof=1)
    expect_var = dof * (1.0 + np.eye(d))
    # the variance of a Wishart entry has relative standard error ~ sqrt(2 / N) * O(1); 10% is
    # > 6 of them at N = 20000.
    np.testing.assert_allclose(var, expect_var, rtol=0.1)
    # float32 products: count eigenvalues above 1e-4 of the largest
    assert np.linalg.matrix_rank(w[0], tol=1e-4 * np.abs(w[0]).max()) == min(dof, d)


@pytest.mark.parametrize("regime", ["replace", "accumulate"])
@pytest.mark.parametrize("n,d", [(10, 3), (4, 5)])  # (4, 5): n <= d, a singular Wishart
def test_fast_and_sample_paths_agree(regime, n, d):
    fast = _sweep(regime, n, d, True, root=0)
    slow = _sweep(regime, n, d, False, root=1)
    for m in METRICS:
        for g in GENS:
            a, b = fast[m][:, g], slow[m][:, g]
            if m == "logdet_ratio" and n <= d:
                # singular covariance: the fast path's triangular root has exact zeros (log det
                # at the floor), the sample path's eigenvalues are float32 rounding noise
                continue
            p = stats.ks_2samp(a, b).pvalue
            assert p > ALPHA, f"{regime} n={n} d={d} {m} g={g}: KS p={p:.2e}"
    np.testing.assert_allclose(fast["pool_size"][0], slow["pool_size"][0])
    np.testing.assert_allclose(fast["real_fraction"][0], slow["real_fraction"][0], rtol=1e-6)


def test_ks_detects_a_wrong_sample_size():
    """Negative control: the same tests reject n = 10 against n = 13 (trace ratio at g = 20)."""
    a = _sweep("replace", 10, 3, True, root=0)["trace_ratio"][:, 20]
    b = _sweep("replace", 13, 3, False, root=1)["trace_ratio"][:, 20]
    assert stats.ks_2samp(a, b).pvalue < ALPHA


@pytest.mark.parametrize("fast", [True, False])
def test_replace_matches_closed_forms(fast):
    n, d = 10, 3
    m = _sweep("replace", n, d, fast, root=2)
    g = np.array(EARLY)
    for name, expect in [("trace_ratio", theory.gaussian_trace_ratio("replace", n, g)),
                         ("mean_error", theory.gaussian_mean_error("replace", d, 1.0, n, g))]:
        x = m[name][:, g]
        se = x.std(0, ddof=1) / np.sqrt(len(x))
        assert np.all(np.abs(x.mean(0) - expect) < 4 * se), (name, fast)


def test_accumulate_mean_error_bound_and_pool_size():
    n, d = 10, 3
    m = _sweep("accumulate", n, d, True, root=3)
    x = m["mean_error"][:, 20]
    bound = d / n * np.pi**2 / 6
    assert x.mean() < bound + 4 * x.std(ddof=1) / np.sqrt(len(x))
    assert m["trace_ratio"][:, 20].mean() > 0.5
    np.testing.assert_array_equal(m["pool_size"][0], n + n * np.arange(21))


def test_scale_shrinks_trace_geometrically():
    """With variance shrink s: E[tr Sigma_g] = s^g q^(g+1) tr Sigma (replace, MLE)."""
    n, d, s = 10, 3, 0.8
    m = _sweep("replace", n, d, True, root=4, hp={"scale": s})["trace_ratio"]
    g = np.array(EARLY)
    expect = s**g * ((n - 1) / n) ** (g + 1)
    x = m[:, g]
    assert np.all(np.abs(x.mean(0) - expect) < 4 * x.std(0, ddof=1) / np.sqrt(len(x)))


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
