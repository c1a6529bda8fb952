"""Metric helpers shared by model families: small, fixed-size, float32 scalars.

All functions are pure and jit/vmap friendly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

#: Relative eigenvalue floor: eigenvalues below ``EIG_FLOOR * max(trace/d, tiny)`` count as zero.
EIG_FLOOR = 1e-12


def psd_sqrt(cov: Float[Array, "d d"]) -> Float[Array, "d d"]:
    """Symmetric square root of a PSD matrix via ``eigh`` (negative eigenvalues clipped to 0).

    Works for singular matrices (e.g. a covariance fit on n <= d points).

    >>> import jax.numpy as jnp
    >>> psd_sqrt(jnp.diag(jnp.array([4.0, 0.0]))).tolist()
    [[2.0, 0.0], [0.0, 0.0]]
    """
    evals, evecs = jnp.linalg.eigh(cov)
    return (evecs * jnp.sqrt(jnp.maximum(evals, 0.0))[None, :]) @ evecs.T


def psd_cholesky(s: Float[Array, "d d"]) -> Float[Array, "d d"]:
    """Lower-triangular ``L`` with ``L L^T = s`` for a symmetric PSD ``s``, singular allowed.

    Column Cholesky in plain ``jnp`` (a ``fori_loop`` over the d columns: under ``vmap`` one
    batched program, no per-matrix LAPACK call). A pivot at or below ``d * eps * max(diag(s))``
    counts as zero and its column is set to 0, so a rank-deficient ``s`` (a scatter of n <= d
    points, a collapsed covariance) gives a finite factor of the same rank instead of NaN.

    >>> import jax.numpy as jnp
    >>> psd_cholesky(jnp.array([[4.0, 2.0], [2.0, 1.0]])).tolist()  # rank 1
    [[2.0, 0.0], [1.0, 0.0]]
    """
    d = s.shape[-1]
    diag = jnp.diagonal(s)
    tol = d * jnp.finfo(s.dtype).eps * jnp.maximum(jnp.max(diag), jnp.finfo(s.dtype).tiny)
    rows = jnp.arange(d)

    def column(j, chol):
        col = s[:, j] - chol @ chol[j, :]
        pivot = col[j]
        ok = pivot > tol
        inv = jnp.where(ok, jax.lax.rsqrt(jnp.where(ok, pivot, 1.0)), 0.0)
        return chol.at[:, j].set(jnp.where(rows >= j, col * inv, 0.0))

    return jax.lax.fori_loop(0, d, column, jnp.zeros_like(s))


def floored_eigvalsh(cov: Float[Array, "d d"]) -> Float[Array, " d"]:
    """Eigenvalues of a symmetric matrix, floored at a tiny positive value (finite logs)."""
    evals = jnp.linalg.eigvalsh(cov)
    floor = jnp.finfo(cov.dtype).tiny
    return jnp.maximum(evals, floor)


def gaussian_w2(
    mu1: Float[Array, " d"], cov1: Float[Array, "d d"],
    mu2: Float[Array, " d"], cov2: Float[Array, "d d"],
) -> Float[Array, ""]:
    """2-Wasserstein distance between N(mu1, cov1) and N(mu2, cov2).

    ``W2^2 = |mu1 - mu2|^2 + tr(cov1) + tr(cov2) - 2 tr((cov2^1/2 cov1 cov2^1/2)^1/2)``.

    >>> import jax.numpy as jnp
    >>> float(gaussian_w2(jnp.zeros(2), jnp.eye(2), jnp.ones(2), 4 * jnp.eye(2)) ** 2)
    4.0
    """
    s2 = psd_sqrt(cov2)
    cross = jnp.sum(jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(s2 @ cov1 @ s2), 0.0)))
    w2sq = jnp.sum((mu1 - mu2) ** 2) + jnp.trace(cov1) + jnp.trace(cov2) - 2.0 * cross
    return jnp.sqrt(jnp.maximum(w2sq, 0.0))


def gaussian_nll(
    x: Float[Array, "m d"], mu: Float[Array, " d"], cov: Float[Array, "d d"], ridge: float = 1e-6,
    floor: float | Array = 0.0,
) -> Float[Array, ""]:
    """Mean negative log-likelihood of rows of ``x`` under N(mu, cov + (ridge * tr/d + floor) I).

    The relative ridge keeps the value finite when ``cov`` is singular; the absolute variance
    ``floor`` keeps it finite when ``cov`` is exactly 0 (a collapsed fit).
    """
    d = mu.shape[0]
    scale = jnp.maximum(jnp.trace(cov) / d, jnp.finfo(cov.dtype).tiny)
    c = cov + (ridge * scale + floor) * jnp.eye(d, dtype=cov.dtype)
    chol = jnp.linalg.cholesky(c)
    z = jax.scipy.linalg.solve_triangular(chol, (x - mu[None, :]).T, lower=True)
    maha = jnp.sum(z**2, axis=0)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    return 0.5 * jnp.mean(maha) + 0.5 * logdet + 0.5 * d * jnp.log(2.0 * jnp.pi)
