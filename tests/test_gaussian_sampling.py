"""The Gaussian's random draws: chi-squares from one shared Marsaglia-Tsang stream, and the
roots of covariances the sample path samples with.

The chi-square draws of a Bartlett factor share one stream of proposals (``chisquare``); these
tests check the claims its docstring makes: the rejection bound and stream size (against scipy),
the pass that assigns proposals to draws (against a plain loop, including a stream that runs
out), each draw's law (KS against scipy.stats.chi2, small and large df, the boosted df = 1) and
the independence of the draws. ``pivoted_cholesky`` is checked for accuracy on singular and
near-singular float32 covariances, with the unpivoted ``psd_cholesky`` as the negative control;
``masked_root`` (the sample path's fit: a QR of the points) for log det on ill-conditioned clouds,
with the scatter's pivoted Cholesky as the negative control.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from collapse_jax import StaticConfig, make_chain, run_chain
from collapse_jax.config import hparams_from
from collapse_jax.metrics import pivoted_cholesky, psd_cholesky, psd_sqrt
from collapse_jax.models.gaussian_fast import (
    CHI2_EXHAUST,
    COLLAPSE_FLOOR,
    MT_REJECT,
    _binomial_below,
    _first_after,
    chisquare,
    moment_nll,
    stream_size,
)
from collapse_jax.pool import masked_cov, masked_root

N = 20000
# Bonferroni over the KS tests below (4 df sets, 29 draws)
ALPHA = 1e-3 / 29


def _mt_accept(a: float) -> float:
    """Acceptance probability of one Marsaglia-Tsang proposal at shape ``a >= 1`` (quadrature)."""
    d = a - 1.0 / 3.0
    c = 1.0 / np.sqrt(9.0 * d)

    def density(x):  # normal density times the acceptance probability exp(...) <= 1
        return stats.norm.pdf(x) * np.exp(0.5 * x * x + d - d * (1 + c * x) ** 3
                                          + 3 * d * np.log1p(c * x))

    return integrate.quad(density, -1.0 / c, 60.0, limit=500, epsabs=1e-15, epsrel=1e-12)[0]


def test_rejection_bound():
    """``1 - p(a) <= MT_REJECT / a`` for a >= 1: a (1 - p(a)) falls from 0.0483 to 1/36."""
    shapes = np.unique(np.concatenate([np.linspace(1.0, 3.0, 21), np.geomspace(3.0, 1e4, 30)]))
    scaled = np.array([a * (1.0 - _mt_accept(a)) for a in shapes])
    assert np.all(scaled <= MT_REJECT)
    assert np.all(np.diff(scaled) < 0)
    assert scaled[0] == pytest.approx(0.04833, abs=1e-5)
    assert scaled[-1] == pytest.approx(1.0 / 36.0, rel=1e-3)


@pytest.mark.parametrize("k,shape", [(1, 1.0), (9, 1.0), (10, 1.0), (10, 11.0), (10, 45.0),
                                     (100, 1.0)])
def test_stream_size_is_the_smallest_safe_one(k, shape):
    m = stream_size(k, shape)
    p = 1.0 - MT_REJECT / shape
    assert _binomial_below(m, k, p) == pytest.approx(stats.binom.cdf(k - 1, m, p), rel=1e-6)
    assert stats.binom.cdf(k - 1, m, p) <= k * CHI2_EXHAUST < stats.binom.cdf(k - 1, m - 1, p)
    # the former scheme's worst case, (1 - p(1))^8 per draw, is not exceeded
    assert CHI2_EXHAUST <= (1.0 - _mt_accept(1.0)) ** 8


def _first_after_loop(ok):
    k, m = ok.shape
    taken, out = -1, []
    for i in range(k):
        later = [j for j in range(taken + 1, m) if ok[i, j]]
        taken = later[0] if later else m - 1
        out.append(taken)
    return out


@pytest.mark.parametrize("m", [5, 14, 32, 33, 60])
def test_first_after_matches_a_loop(m):
    """Both branches (packed bits for m <= 32, masked minimum above), streams that run out."""
    rs = np.random.default_rng(m)
    k = 4
    f = jax.jit(lambda ok: _first_after(ok, m))
    ran_out = 0
    for accept in (0.9, 0.5, 0.15, 0.03):
        for _ in range(50):
            ok = rs.random((k, m)) < accept
            want = _first_after_loop(ok)
            ran_out += want[-1] == m - 1 and not ok[-1, m - 1]
            assert np.asarray(f(jnp.asarray(ok))).tolist() == want
    assert ran_out > 0  # the run-out fallback was exercised


def _draws(dfs, traced=False, seed=0):
    keys = jax.random.split(jax.random.key(seed), N)
    if traced:
        f = jax.jit(jax.vmap(chisquare, in_axes=(0, None)))
        return np.asarray(f(keys, jnp.asarray(dfs)), np.float64)
    return np.asarray(jax.jit(jax.vmap(lambda k: chisquare(k, dfs)))(keys), np.float64)


# the diagonals of Bartlett factors at d = 10: n = 10 (df 9 .. 1, the worst shape 1 and the
# boosted df = 1), n = 100 (99 .. 90), and a large df
DF_SETS = [np.arange(9.0, 0.0, -1.0), np.arange(99.0, 89.0, -1.0), np.array([2.0, 1.0, 5000.0])]


@pytest.mark.parametrize("dfs,traced", [(DF_SETS[0], False), (DF_SETS[1], False),
                                        (DF_SETS[2], False), (DF_SETS[0], True)])
def test_each_draw_is_chisquare(dfs, traced):
    x = _draws(dfs.astype(np.float32), traced)
    assert np.all(x > 0)
    for j, df in enumerate(dfs):
        p = stats.kstest(x[:, j], stats.chi2(df).cdf).pvalue
        assert p > ALPHA, f"df={df} (draw {j}, traced={traced}): KS p={p:.2e}"


@pytest.mark.parametrize("dfs", DF_SETS[:2])
def test_draws_are_independent(dfs):
    """Pearson and Spearman correlation of every pair of draws is 0 within 4 standard errors;
    and a draw's value does not move the next draw's (mean of draw j + 1 given draw j above its
    median vs below: 0 within 4 s.e.)."""
    x = _draws(dfs.astype(np.float32), seed=1)
    k = len(dfs)
    se = 1.0 / np.sqrt(N)
    pearson = np.corrcoef(x.T)[np.triu_indices(k, 1)]
    spearman = stats.spearmanr(x).statistic[np.triu_indices(k, 1)]
    # 45 pairs: 4 s.e. is ~ a 3e-3 two-sided Bonferroni level
    assert np.all(np.abs(pearson) < 4 * se), pearson
    assert np.all(np.abs(spearman) < 4 * se), spearman
    for j in range(k - 1):
        hi = x[:, j] > np.median(x[:, j])
        a, b = x[hi, j + 1], x[~hi, j + 1]
        diff_se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        assert abs(a.mean() - b.mean()) < 4 * diff_se, j


def test_independence_check_can_fail():
    """Negative control: reusing the stream position (every draw takes the first proposal its
    own test accepts, from the same stream) correlates the draws, and the check above sees it."""
    dfs = np.arange(99.0, 89.0, -1.0).astype(np.float32)
    keys = jax.random.split(jax.random.key(1), N)
    dependent = jax.vmap(lambda k: jnp.stack([chisquare(jax.random.clone(k), dfs[j:j + 1])[0]
                                              for j in range(len(dfs))]))
    x = np.asarray(jax.jit(dependent)(keys), np.float64)
    assert np.abs(np.corrcoef(x.T)[0, 1]) > 4.0 / np.sqrt(N)


def _covariances(n, d=10, batch=1000, scaled=False, seed=0):
    rs = np.random.default_rng(seed)
    x = rs.standard_normal((batch, n, d))
    if scaled:  # per-coordinate scales over ~3 orders of magnitude of variance
        x = x * np.exp(rs.standard_normal((batch, 1, d)))
    cov = jax.vmap(lambda p: masked_cov(p, jnp.ones((n,)))[1])(jnp.asarray(x, jnp.float32))
    return np.asarray(cov)


def _relative_error(root_fn, cov):
    r = np.asarray(jax.jit(jax.vmap(root_fn))(cov), np.float64)
    c = cov.astype(np.float64)
    err = np.linalg.norm(r @ np.swapaxes(r, 1, 2) - c, axis=(1, 2))
    return err / np.linalg.norm(c, axis=(1, 2)), r


@pytest.mark.parametrize("n", [2, 4, 10, 11, 30])
@pytest.mark.parametrize("scaled", [False, True])
def test_pivoted_cholesky_is_as_accurate_as_eigh(n, scaled):
    """float32 covariances of n points in d = 10: singular (n <= d, rank n - 1), near-singular
    (n = 11) and full rank. ``R R^T`` is within 5e-6 of ``s`` (relative Frobenius, worst of 1000),
    as the eigh square root it replaces for sampling (2e-6 to 3e-6 measured); the rank is
    revealed (zero columns) for the equal-scale singular ones."""
    cov = _covariances(n, scaled=scaled, seed=n)
    err, r = _relative_error(lambda s: pivoted_cholesky(s)[0], cov)
    err_eigh, _ = _relative_error(psd_sqrt, cov)
    assert err.max() < 5e-6, err.max()
    assert err_eigh.max() < 5e-6
    if n <= 10 and not scaled:
        assert np.all(np.sum(np.abs(r).max(axis=1) > 0, axis=1) == n - 1)


def test_unpivoted_cholesky_fails_the_same_check():
    """Negative control: ``psd_cholesky`` (no pivoting) loses > 1e-4 of a rank-deficient s."""
    err, _ = _relative_error(psd_cholesky, _covariances(4, seed=4))
    assert err.max() > 1e-4


def test_pivoted_log_det_near_singular():
    """``sum(log pivots)`` is log det s (float64 truth) to 0.03 up to condition number 1e6, closer
    than float32 eigvalsh (the former logdet_ratio of the sample path)."""
    rs = np.random.default_rng(0)
    d = 10
    q = np.linalg.qr(rs.standard_normal((300, d, d)))[0]
    for cond in (1e2, 1e4, 1e6):
        ev = np.geomspace(1.0, 1.0 / cond, d)
        s = jnp.asarray((q * ev) @ np.swapaxes(q, 1, 2), jnp.float32)
        logdet = jax.jit(jax.vmap(lambda c: jnp.sum(jnp.log(pivoted_cholesky(c)[1]))))(s)
        eig = jax.jit(jax.vmap(lambda c: jnp.sum(jnp.log(jnp.linalg.eigvalsh(c)))))(s)
        err = np.abs(np.asarray(logdet) - np.log(ev).sum())
        assert err.max() < 0.03, (cond, err.max())
        assert err.max() <= np.abs(np.asarray(eig) - np.log(ev).sum()).max() + 1e-4


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


def test_gaussian_nll_of_points_matches_scipy():
    """``metrics.gaussian_nll`` (points -> moments -> ``gaussian_nll_moments``) equals scipy's
    mean per-point log-density under the same ridged, floored covariance, to 1e-4 relative."""
    from collapse_jax import metrics as M

    d = 4
    rs = np.random.default_rng(0)
    for floor in (0.0, 0.5):
        a = rs.standard_normal((d, d))
        cov = a @ a.T + 0.1 * np.eye(d)
        mu, x = rs.standard_normal(d), rs.standard_normal((50, d)) * 2.0
        got = float(M.gaussian_nll(jnp.asarray(x, jnp.float32), jnp.asarray(mu, jnp.float32),
                                   jnp.asarray(cov, jnp.float32), floor=floor))
        ridged = cov + (1e-6 * np.trace(cov) / d + floor) * np.eye(d)
        ref = -stats.multivariate_normal(mu, ridged).logpdf(x).mean()
        assert abs(got - ref) <= 1e-4 * abs(ref), (floor, got, ref)
        # the negative control: without the floor the value differs
        if floor:
            bare = -stats.multivariate_normal(mu, cov).logpdf(x).mean()
            assert abs(got - bare) > 1e-2 * abs(bare)
