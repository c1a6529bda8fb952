"""The kernel density estimate's arithmetic: blocked log kernel sums, bandwidth rules, sampling,
and the running moments and prefix sampling of its exact incremental fast path.

References:
    Silverman 1986, "Density Estimation for Statistics and Data Analysis"; Scott 1992,
        "Multivariate Density Estimation".
    Chan, Golub, LeVeque 1979, "Updating formulae and a pairwise algorithm for computing sample
        variances".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from collapse_jax.pool import masked_cov, safe_reciprocal
from collapse_jax.rng import box_muller
from collapse_jax.types import RealData

#: Entries of the [test block, pool] kernel matrix computed at once per chain.
KERNEL_BLOCK = 2**18
#: Smallest bandwidth a rule of thumb may return (a collapsed pool has zero spread).
MIN_BANDWIDTH = 1e-6
#: ``var_ratio`` at or below which a chain counts as collapsed (see ``kde.py``).
COLLAPSE_FLOOR = 1e-6
#: log of an empty kernel sum, kept finite (a -inf parameter would raise the ``nonfinite`` flag):
#: ``logaddexp(LOG_ZERO, v) == v`` for every finite ``v`` of a kernel sum.
LOG_ZERO = float(jnp.finfo(jnp.float32).min)


def log_kernel_sum(
    x: Float[Array, "m d"], points: Float[Array, "P d"], logw: Float[Array, " P"], h,
    block: int | None = None,
) -> Float[Array, " m"]:
    """``log sum_j exp(logw_j - |x_i - p_j|^2 / (2 h^2))`` for each row ``x_i``, in blocks.

    The unnormalised log of a weighted Gaussian kernel sum (no ``1 / sum w``, no
    ``(2 pi h^2)^(-d/2)``); points with ``logw = -inf`` do not count, and a row with no counting
    point gives ``-inf``. ``block`` rows of ``x`` are processed at once (default:
    ``KERNEL_BLOCK // P``), so memory is ``O(block * P)``.

    Args:
        x: ``[m, d]`` query rows.
        points: ``[P, d]`` kernel centres.
        logw: ``[P]`` log weights (``-inf`` for points that do not count).
        h: scalar bandwidth.
        block: rows of ``x`` per kernel block (static).

    Returns:
        ``[m]`` log kernel sums.

    >>> import jax.numpy as jnp
    >>> v = log_kernel_sum(jnp.zeros((1, 1)), jnp.array([[0.], [2.]]), jnp.zeros(2), 1.)
    >>> round(float(v[0]), 6)  # log(1 + exp(-2))
    0.126928

    References:
        Silverman 1986, "Density Estimation for Statistics and Data Analysis".
    """
    m, d = x.shape
    p = points.shape[0]
    block = block or max(1, min(m, KERNEL_BLOCK // max(p, 1)))
    nb = -(-m // block)
    h = jnp.asarray(h, x.dtype)
    cols = points.T  # [d, P]: each coordinate contiguous along the points

    def one(xb):
        # squared distances summed coordinate by coordinate (d is small): [block, P] arrays
        # with P minor vectorise well, where a [block, P, d] difference reduced over its minor
        # axis of size d does not on XLA CPU; same sum order as jnp.sum
        d2 = (xb[:, 0:1] - cols[0][None, :]) ** 2
        for k in range(1, d):
            d2 = d2 + (xb[:, k : k + 1] - cols[k][None, :]) ** 2
        return _logsumexp_rows(-d2 / (2.0 * h**2) + logw[None, :])

    if nb == 1:  # one block: no loop
        return one(x)
    xp = jnp.concatenate([x, jnp.zeros((nb * block - m, d), x.dtype)]).reshape(nb, block, d)
    return jax.lax.map(one, xp).reshape(-1)[:m]


def _logsumexp_rows(a: Float[Array, "m P"]) -> Float[Array, " m"]:
    """``log sum_j exp(a_ij)`` per row, ``-inf`` for a row of ``-inf``.

    As ``jax.nn.logsumexp``, but with its exact bounds enforced: ``a - max <= 0`` and the sum of
    ``exp(a - max)`` at least 1 (the maximum's own term). With a bandwidth at its floor the logits
    reach ~1e12, where one float32 ulp is ~1e5, and a fused recomputation of the logits that
    rounds differently from the one the maximum was taken over (seen at XLA CPU's optimisation
    level 0) would otherwise turn a finite log density into ``-inf`` or ``+inf``.
    """
    top = jnp.max(a, axis=1)
    shift = jnp.where(jnp.isfinite(top), top, 0.0)
    total = jnp.sum(jnp.exp(jnp.minimum(a - shift[:, None], 0.0)), axis=1)
    return jnp.where(jnp.isfinite(top), shift + jnp.log(jnp.maximum(total, 1.0)), top)


def log_weights(w: Float[Array, " P"]) -> Float[Array, " P"]:
    """``log w``, ``-inf`` where ``w <= 0``."""
    return jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)


def log_norm(d: int, h) -> Array:
    """``log (2 pi h^2)^(-d/2)``, the Gaussian kernel's normaliser."""
    return -0.5 * d * jnp.log(2.0 * jnp.pi * h**2)


def kde_log_density(
    x: Float[Array, "m d"], points: Float[Array, "P d"], w: Float[Array, " P"], h,
    block: int | None = None,
) -> Float[Array, " m"]:
    """log of the weighted Gaussian KDE at each row of ``x``, in blocks of test rows.

    ``log sum_j (w_j / sum w) N(x; p_j, h^2 I)``; zero-weight points do not count. ``block`` test
    rows are processed at once (default: ``KERNEL_BLOCK // P``), so memory is ``O(block * P)``.

    >>> import jax.numpy as jnp
    >>> v = kde_log_density(jnp.zeros((1, 1)), jnp.array([[0.], [5.]]), jnp.array([1., 0.]), 1.)
    >>> round(float(v[0]), 6)  # log N(0; 0, 1)
    -0.918939
    """
    h = jnp.asarray(h, x.dtype)
    logw = log_weights(w) - jnp.log(jnp.sum(w))
    return log_kernel_sum(x, points, logw, h, block) + log_norm(x.shape[1], h)


def rule_of_thumb(
    points: Float[Array, "P d"], w: Float[Array, " P"], rule: str
) -> Float[Array, ""]:
    """Scott / Silverman bandwidth of a weighted point set (isotropic, pooled std)."""
    d = points.shape[1]
    _, cov = masked_cov(points, w)
    sd = jnp.sqrt(jnp.maximum(jnp.trace(cov) / d, 0.0))
    n_eff = jnp.sum(w) ** 2 / jnp.maximum(jnp.sum(w**2), jnp.finfo(w.dtype).tiny)
    c = 1.0 if rule == "scott" else (4.0 / (d + 2.0)) ** (1.0 / (d + 4.0))
    return c * n_eff ** (-1.0 / (d + 4.0)) * sd



def held_out(real: RealData) -> dict[str, Array]:
    """The held-out points and their total variance (the ``var_ratio`` denominator).

    Both families of parameters carry them (``init`` receives ``real``): ``evaluate`` reads the
    held-out points from the parameters, so the compiled generation loop needs no re-draw of the
    chain's real data (the source's random numbers and curves are compiled once, into ``init``).
    """
    _, t_cov = masked_cov(real.test, jnp.ones(real.test.shape[:1], jnp.float32))
    return {"test": real.test, "test_trace": jnp.trace(t_cov)}


def kernel_sample(key, points, idx_fn, scale, h, num):
    """``num`` KDE samples: one uniform draw gives the pool indices (``idx_fn`` of its first row)
    and the kernel noise (Box-Muller on the others): one random-number call per generation."""
    d = points.shape[1]
    u = jax.random.uniform(key, (1 + 2 * (-(-d // 2)), num), jnp.float32)
    eps = box_muller(u[1:], d)
    return points[idx_fn(u[0])] + (jnp.sqrt(scale) * h) * eps


def moments(x: Float[Array, "k d"], w: Float[Array, " k"]) -> dict[str, Array]:
    """Weight total, weighted mean and centred scatter of the rows of ``x`` (two passes).

    Args:
        x: ``[k, d]`` rows.
        w: ``[k]`` weights >= 0; rows of weight 0 do not count.

    Returns:
        ``{"weight": [], "mean": [d], "scatter": [d, d]}`` with ``scatter = sum_j w_j (x_j -
        mean)(x_j - mean)^T`` (all zero for zero total weight); ``scatter / weight`` is
        ``pool.masked_cov``'s covariance.

    >>> import jax.numpy as jnp
    >>> m = moments(jnp.array([[0.], [2.], [99.]]), jnp.array([1., 1., 0.]))
    >>> float(m["weight"]), m["mean"].tolist(), m["scatter"].tolist()
    (2.0, [1.0], [[2.0]])

    References:
        Chan, Golub, LeVeque 1979, "Updating formulae and a pairwise algorithm for computing
            sample variances" (the two-pass algorithm).
    """
    total = jnp.sum(w)
    mean = (w @ x) * safe_reciprocal(total)
    xc = x - mean[None, :]
    return {"weight": total, "mean": mean, "scatter": (xc * w[:, None]).T @ xc}


def merge_moments(a: dict[str, Array], b: dict[str, Array]) -> dict[str, Array]:
    """Moments of the union of two weighted point sets (Chan et al.'s pairwise update, exact).

    Args:
        a: ``moments`` of one set (``weight []``, ``mean [d]``, ``scatter [d, d]``).
        b: ``moments`` of the other; either may have zero weight.

    Returns:
        The ``moments`` of the union.

    >>> import jax.numpy as jnp
    >>> x, w = jnp.array([[0.], [2.], [5.], [7.]]), jnp.array([1., 2., 1., 3.])
    >>> m, whole = merge_moments(moments(x[:1], w[:1]), moments(x[1:], w[1:])), moments(x, w)
    >>> bool(jnp.allclose(m["mean"], whole["mean"])), bool(jnp.allclose(m["scatter"],
    ...                                                                 whole["scatter"]))
    (True, True)

    References:
        Chan, Golub, LeVeque 1979, "Updating formulae and a pairwise algorithm for computing
            sample variances".
    """
    total = a["weight"] + b["weight"]
    inv = safe_reciprocal(total)
    delta = b["mean"] - a["mean"]
    return {
        "weight": total,
        "mean": a["mean"] + (b["weight"] * inv) * delta,
        "scatter": a["scatter"] + b["scatter"]
        + (a["weight"] * b["weight"] * inv) * (delta[:, None] * delta[None, :]),
    }


def prefix_weighted_indices(
    u: Float[Array, " num"], n_real: int, n_synth: Array, real_weight
) -> Int[Array, " num"]:
    """``num`` indices of an accumulate pool drawn with probability proportional to the weights.

    The pool is a valid prefix: ``n_real`` real slots of weight ``real_weight`` then ``n_synth``
    synthetic slots of weight 1. Closed-form inverse CDF in O(num), no pass over the capacity:
    ``u = U * W`` with ``W = real_weight n_real + n_synth``; a real slot ``floor(u /
    real_weight)`` below ``real_weight n_real``, else ``n_real + floor(u - real_weight n_real)``.
    Returns the same indices as ``pool.weighted_indices(u, w)`` on the pool's weights ``w``
    whenever their cumulative sums are exact in float32 (``real_weight`` a power of two, pools
    below 2^24 slots).

    Args:
        u: ``[num]`` uniforms in ``[0, 1)``.
        n_real: static number of real slots (``n0``), the first slots of the pool.
        n_synth: int32 or float32 scalar, number of synthetic slots after them.
        real_weight: float32 scalar >= 0, the weight of a real slot.

    Returns:
        ``[num]`` int32 indices in ``[0, n_real + n_synth)``.

    >>> import jax, jax.numpy as jnp
    >>> u = jax.random.uniform(jax.random.key(0), (50,))
    >>> idx = prefix_weighted_indices(u, 3, jnp.int32(2), jnp.float32(0.0))
    >>> sorted(set(idx.tolist()))  # real weight 0: only the synthetic slots 3 and 4
    [3, 4]

    References:
        Devroye 1986, "Non-Uniform Random Variate Generation", ch. II.2 (inversion).
    """
    rw = jnp.asarray(real_weight, jnp.float32)
    ns = jnp.asarray(n_synth, jnp.float32)
    w_real = rw * n_real
    u = u.astype(jnp.float32) * (w_real + ns)
    real_idx = jnp.floor(u / jnp.where(rw > 0, rw, 1.0))
    real_idx = jnp.clip(real_idx, 0, n_real - 1).astype(jnp.int32)
    synth_idx = n_real + jnp.clip(jnp.floor(u - w_real), 0, jnp.maximum(ns - 1, 0))
    return jnp.where((u < w_real) | (ns == 0), real_idx, synth_idx.astype(jnp.int32))
