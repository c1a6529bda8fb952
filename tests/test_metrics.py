"""The Gaussian metrics' linear algebra (``collapse_jax.metrics``): ``pivoted_cholesky`` is as
accurate as the eigh square root on singular and near-singular float32 covariances (the
unpivoted ``psd_cholesky`` as the negative control) and gives log det from its pivots;
``psd_cholesky`` on full-rank and rank-deficient matrices; ``gaussian_nll`` against scipy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import XLA_DEFAULT_LEVEL
from scipy import stats

from collapse_jax.metrics import pivoted_cholesky, psd_cholesky, psd_sqrt
from collapse_jax.pool import masked_cov


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
    than float32 eigvalsh (the former logdet_ratio of the sample path); compiled at XLA's default
    code generation (``XLA_DEFAULT_LEVEL``), where the bound was measured."""
    rs = np.random.default_rng(0)
    d = 10
    q = np.linalg.qr(rs.standard_normal((300, d, d)))[0]
    for cond in (1e2, 1e4, 1e6):
        ev = np.geomspace(1.0, 1.0 / cond, d)
        s = jnp.asarray((q * ev) @ np.swapaxes(q, 1, 2), jnp.float32)
        logdet_fn = jax.jit(jax.vmap(lambda c: jnp.sum(jnp.log(pivoted_cholesky(c)[1]))))
        logdet = logdet_fn.lower(s).compile(XLA_DEFAULT_LEVEL)(s)
        eig = jax.jit(jax.vmap(lambda c: jnp.sum(jnp.log(jnp.linalg.eigvalsh(c)))))(s)
        err = np.abs(np.asarray(logdet) - np.log(ev).sum())
        assert err.max() < 0.03, (cond, err.max())
        assert err.max() <= np.abs(np.asarray(eig) - np.log(ev).sum()).max() + 1e-4


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
