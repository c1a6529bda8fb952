"""Metric helpers shared by model families: small, fixed-size, float32 scalars.

All functions are pure and jit/vmap friendly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from collapse_jax import linalg as L

#: Relative eigenvalue floor: eigenvalues below ``EIG_FLOOR * max(trace/d, tiny)`` count as zero.
EIG_FLOOR = 1e-12


def psd_sqrt(cov: Float[Array, "d d"]) -> Float[Array, "d d"]:
    """Symmetric square root of a PSD matrix via ``eigh`` (negative eigenvalues clipped to 0).

    Works for singular matrices (e.g. a covariance fit on n <= d points).

    >>> import jax.numpy as jnp
    >>> psd_sqrt(jnp.diag(jnp.array([4.0, 0.0]))).tolist()
    [[2.0, 0.0], [0.0, 0.0]]
    """
    evals, evecs = L.eigh(cov)
    return (evecs * jnp.sqrt(jnp.maximum(evals, 0.0))[None, :]) @ evecs.T


def psd_cholesky(s: Float[Array, "d d"], rtol: float | None = None) -> Float[Array, "d d"]:
    """Lower-triangular ``L`` with ``L L^T = s`` for a symmetric PSD ``s``, singular allowed.

    Column Cholesky in plain ``jnp`` (a ``fori_loop`` over the d columns: under ``vmap`` one
    batched program, no per-matrix LAPACK call). A pivot at or below ``rtol * max(diag(s))``
    (``rtol`` defaults to ``d * eps``) counts as zero and its column is set to 0, so a
    rank-deficient ``s`` (a scatter of n <= d points, a collapsed covariance) gives a finite
    factor of the same rank instead of NaN. ``rtol=0`` is the plain Cholesky of a positive
    definite ``s`` (LAPACK ``potrf``'s arithmetic, without its per-matrix call).

    >>> import jax.numpy as jnp
    >>> psd_cholesky(jnp.array([[4.0, 2.0], [2.0, 1.0]])).tolist()  # rank 1
    [[2.0, 0.0], [1.0, 0.0]]
    """
    d = s.shape[-1]
    diag = jnp.diagonal(s)
    rtol = d * jnp.finfo(s.dtype).eps if rtol is None else rtol
    tol = rtol * jnp.maximum(jnp.max(diag), jnp.finfo(s.dtype).tiny)
    rows = jnp.arange(d)

    def column(j, chol):
        col = s[:, j] - chol @ chol[j, :]
        pivot = col[j]
        ok = pivot > tol
        inv = jnp.where(ok, jax.lax.rsqrt(jnp.where(ok, pivot, 1.0)), 0.0)
        return chol.at[:, j].set(jnp.where(rows >= j, col * inv, 0.0))

    return jax.lax.fori_loop(0, d, column, jnp.zeros_like(s))


def lower_inverse(chol: Float[Array, "d d"]) -> Float[Array, "d d"]:
    """Inverse of a lower-triangular matrix with a nonzero diagonal, in plain ``jnp``.

    Forward substitution row by row (a ``fori_loop`` over the d rows: under ``vmap`` one batched
    program, where ``linalg.solve_triangular`` makes one LAPACK call per matrix on CPU).

    >>> import jax.numpy as jnp
    >>> lower_inverse(jnp.array([[2.0, 0.0], [1.0, 4.0]])).tolist()
    [[0.5, 0.0], [-0.125, 0.25]]
    """
    d = chol.shape[-1]
    eye = jnp.eye(d, dtype=chol.dtype)

    def row(i, inv):  # rows >= i of inv are still 0, so chol[i] @ inv skips the diagonal
        return inv.at[i].set((eye[i] - chol[i] @ inv) / chol[i, i])

    return jax.lax.fori_loop(0, d, row, jnp.zeros_like(chol))


def pivoted_cholesky(s: Float[Array, "d d"]) -> tuple[Float[Array, "d d"], Float[Array, " d"]]:
    """A root ``R`` with ``R R^T = s`` and its pivots, for a symmetric PSD ``s``, singular allowed.

    Cholesky with diagonal pivoting (LAPACK's ``pstrf`` order, in plain ``jnp``: a ``fori_loop``
    over the d columns, one batched program under ``vmap``): column ``j`` eliminates the row with
    the largest remaining diagonal ``pivots[j]``, so ``R`` is lower triangular up to a permutation
    of its rows and ``prod(pivots) = det s``. Once the largest remaining diagonal is at or below
    ``d * eps * max(diag(s))`` the remaining columns are 0: the rank-revealing factorisation,
    with ``R R^T`` within a few ulps of ``max(diag(s))`` of ``s`` on singular and near-singular
    ``s`` in float32 (an unpivoted Cholesky is not: ``psd_cholesky`` loses up to 1e-3 of ``s``
    on a rank-deficient scatter; tests/test_metrics.py). The pivots are left as
    computed (rounding noise, possibly <= 0, past the rank), like the eigenvalues of ``eigvalsh``:
    ``sum(log(max(pivots, tiny)))`` is ``log det s`` with the same floor. A root to sample
    N(mu, s) as ``mu + R z`` and ``log det s`` without an eigendecomposition, when only ``s`` is
    at hand (from points, ``pool.masked_root`` is more accurate: ``s`` squares their condition).

    >>> import jax.numpy as jnp
    >>> r, piv = pivoted_cholesky(jnp.array([[1.0, 2.0], [2.0, 4.0]]))  # rank 1
    >>> r.tolist(), piv.tolist()
    ([[1.0, 0.0], [2.0, 0.0]], [4.0, 0.0])
    """
    d, dt = s.shape[-1], s.dtype
    diag = jnp.diagonal(s)
    tol = d * jnp.finfo(dt).eps * jnp.maximum(jnp.max(diag), jnp.finfo(dt).tiny)
    rows = jnp.arange(d)

    def column(j, carry):
        schur, root, pivots, free = carry  # schur: what is left of s to factor
        cand = jnp.where(free, jnp.diagonal(schur), -jnp.inf)
        p = jnp.min(jnp.where(cand == jnp.max(cand), rows, d))  # argmax, as two plain reductions
        at_p = rows == p
        col = jnp.sum(jnp.where(at_p[None, :], schur, 0.0), axis=1)  # schur[:, p]
        pivot = jnp.sum(jnp.where(at_p, col, 0.0))
        ok = pivot > tol
        inv = jnp.where(ok, jax.lax.rsqrt(jnp.where(ok, pivot, 1.0)), 0.0)
        c = jnp.where(free, col * inv, 0.0)
        return (schur - c[:, None] * c[None, :], root.at[:, j].set(c), pivots.at[j].set(pivot),
                free & ~at_p)

    init = (s, jnp.zeros_like(s), jnp.zeros((d,), dt), jnp.ones((d,), jnp.bool_))
    _, root, pivots, _ = jax.lax.fori_loop(0, d, column, init)
    return root, pivots


def floored_eigvalsh(cov: Float[Array, "d d"]) -> Float[Array, " d"]:
    """Eigenvalues of a symmetric matrix, floored at a tiny positive value (finite logs)."""
    evals = L.eigvalsh(cov)
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
    cross = jnp.sum(jnp.sqrt(jnp.maximum(L.eigvalsh(s2 @ cov1 @ s2), 0.0)))
    w2sq = jnp.sum((mu1 - mu2) ** 2) + jnp.trace(cov1) + jnp.trace(cov2) - 2.0 * cross
    return jnp.sqrt(jnp.maximum(w2sq, 0.0))


def gaussian_w2_roots(
    mu1: Float[Array, " d"], root1: Float[Array, "d d"],
    mu2: Float[Array, " d"], root2: Float[Array, "d d"],
) -> Float[Array, ""]:
    """``gaussian_w2`` from any roots ``R_i R_i^T = cov_i`` (one ``eigvalsh``, no ``eigh``).

    The cross term ``tr((C2^1/2 C1 C2^1/2)^1/2)`` is the nuclear norm of ``R2^T R1`` (the
    square roots of the eigenvalues of ``(R2^T R1)^T (R2^T R1)``, which are those of
    ``C2^1/2 C1 C2^1/2``).

    >>> import jax.numpy as jnp
    >>> r = jnp.array([[1.0, 0.0], [1.0, 1.0]])  # any root of [[1, 1], [1, 2]]
    >>> cov = r @ r.T
    >>> bool(jnp.allclose(gaussian_w2_roots(jnp.zeros(2), r, jnp.ones(2), 2 * jnp.eye(2)),
    ...                   gaussian_w2(jnp.zeros(2), cov, jnp.ones(2), 4 * jnp.eye(2))))
    True
    """
    m = root2.T @ root1
    cross = jnp.sum(jnp.sqrt(jnp.maximum(L.eigvalsh(m.T @ m), 0.0)))
    w2sq = (jnp.sum((mu1 - mu2) ** 2) + jnp.sum(root1**2) + jnp.sum(root2**2) - 2.0 * cross)
    return jnp.sqrt(jnp.maximum(w2sq, 0.0))


def gaussian_nll_moments(
    x_mean: Float[Array, " d"], x_cov: Float[Array, "d d"], mu: Float[Array, " d"],
    cov: Float[Array, "d d"], ridge: float = 1e-6, floor: float | Array = 0.0,
    trace: Array | None = None,
) -> Float[Array, ""]:
    """Mean negative log-likelihood under N(mu, cov + (ridge * tr/d + floor) I) of points whose
    mean is ``x_mean`` and biased covariance ``x_cov``: the mean Mahalanobis distance is
    ``tr(C^-1 (x_cov + delta delta^T))``, ``delta = x_mean - mu``, so the points themselves are
    not needed (a chain computes its held-out moments once).

    The relative ridge keeps the value finite when ``cov`` is singular; the absolute variance
    ``floor`` keeps it finite when ``cov`` is exactly 0 (a collapsed fit). ``trace``: ``tr(cov)``
    when the caller has it (e.g. from a root). Factored in jnp (``psd_cholesky``,
    ``lower_inverse``): no per-matrix LAPACK call inside a vmapped chain on CPU.

    >>> import jax.numpy as jnp
    >>> round(float(gaussian_nll_moments(jnp.zeros(1), jnp.ones((1, 1)), jnp.zeros(1),
    ...                                   jnp.ones((1, 1)), ridge=0.0)), 4)  # (1 + log 2 pi) / 2
    1.4189
    """
    d, dt = mu.shape[0], mu.dtype
    trace = jnp.trace(cov) if trace is None else trace
    scale = jnp.maximum(trace / d, jnp.finfo(dt).tiny)
    chol = psd_cholesky(cov + (ridge * scale + floor) * jnp.eye(d, dtype=dt), rtol=0.0)
    inv = lower_inverse(chol)
    delta = x_mean - mu
    maha = jnp.sum((inv @ (x_cov + delta[:, None] * delta[None, :])) * inv)
    return 0.5 * maha + jnp.sum(jnp.log(jnp.diagonal(chol))) + 0.5 * d * jnp.log(2.0 * jnp.pi)


def gaussian_nll(
    x: Float[Array, "m d"], mu: Float[Array, " d"], cov: Float[Array, "d d"], ridge: float = 1e-6,
    floor: float | Array = 0.0,
) -> Float[Array, ""]:
    """Mean negative log-likelihood of the rows of ``x`` under N(mu, cov + (ridge * tr/d + floor)
    I) (``gaussian_nll_moments`` of their mean and biased covariance).

    >>> import jax.numpy as jnp
    >>> x = jnp.array([[1.0], [-1.0]])
    >>> round(float(gaussian_nll(x, jnp.zeros(1), jnp.ones((1, 1)), ridge=0.0)), 4)
    1.4189
    """
    x_mean = jnp.mean(x, axis=0)
    xc = x - x_mean[None, :]
    return gaussian_nll_moments(x_mean, xc.T @ xc / x.shape[0], mu, cov, ridge, floor)
