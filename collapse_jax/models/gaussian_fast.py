"""The Gaussian family's exact fast path: a pool of sufficient statistics instead of points.

For ``replace`` and ``accumulate`` (option ``fast_path``, on by default) a fit depends on its pool
only through the sufficient statistics (count, mean, scatter), and the statistics of ``n`` i.i.d.
draws from N(mu, C = R R^T) have a known joint law, so they are drawn without drawing the points:

    mean    = mu + R zbar,        zbar ~ N(0, I_d / n)
    scatter = (R A)(R A)^T,       A A^T ~ Wishart_d(n - 1, I), independent of the mean

with ``A`` the lower-triangular Bartlett factor (``A_ii = sqrt(chi^2_{n-1-i})``, ``A_ij ~ N(0, 1)``
below the diagonal; for n - 1 < d the Wishart is singular and the columns j >= n - 1 are 0). That
is d(d-1)/2 normals, d chi-squares (``chisquare``: one shared stream of Marsaglia-Tsang
proposals) and d normals per generation instead of n d normals. The model's parameters are the mean
and a lower-triangular root ``R`` of the covariance, so under ``replace`` the next root is
``R A / sqrt(n - ddof)`` (no factorisation at all); under ``accumulate`` the pool is the running
statistics of D0 and every synthetic block, merged with the pairwise update of Chan et al. and
refactored by ``metrics.psd_cholesky``: O(d^3) per generation whatever the pool size. The metrics
are those of the sample-based path (``gaussian.py``), computed from ``R`` (log-det from its
diagonal) and from the test set's moments (computed once per chain by the source).

References:
    Bartlett 1933, "On the theory of statistical regression"; Anderson 2003, "An Introduction to
        Multivariate Statistical Analysis", 3rd ed., sec. 7.2 (Wishart, Bartlett decomposition).
    Chan, Golub, LeVeque 1979, "Updating formulae and a pairwise algorithm for computing sample
        variances".
    Marsaglia & Tsang 2000, "A simple method for generating gamma variables".
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from collapse_jax import linalg as L
from collapse_jax import metrics as M
from collapse_jax import regimes as R
from collapse_jax import rng
from collapse_jax.config import StaticConfig
from collapse_jax.model import GenerativeModel
from collapse_jax.regimes import Regime
from collapse_jax.types import PRNGKey

#: Trace ratio at or below which a chain counts as collapsed (and the nll variance floor).
COLLAPSE_FLOOR = 1e-6

#: Regimes whose fits depend on the pool only through its sufficient statistics.
FAST_REGIMES = ("replace", "accumulate")

#: Upper bound on ``a`` times the rejection probability of one Marsaglia-Tsang proposal at shape
#: ``a >= 1``: ``a (1 - p(a))`` decreases from 0.04833 at a = 1 to 1/36 as a -> inf (quadrature;
#: checked in tests/models/test_gaussian_fast.py), so ``1 - p(a) <= MT_REJECT / a``.
MT_REJECT = 0.0484

#: Largest probability, per chi-square draw, that the shared proposal stream runs out (about that
#: of 8 independent proposals per draw, (1 - p(1))^8 = 2.98e-11 at the worst shape); the stream
#: is sized to stay below it.
CHI2_EXHAUST = 2.9e-11


def _binomial_below(m: int, k: int, p: float) -> float:
    """P(Binomial(m, p) < k), summed in log space (exact up to float rounding)."""
    if k <= 0:
        return 0.0
    if k > m:
        return 1.0
    q = 1.0 - p
    logs = [math.lgamma(m + 1) - math.lgamma(j + 1) - math.lgamma(m - j + 1)
            + j * math.log(p) + (m - j) * math.log(q) for j in range(k)]
    top = max(logs)
    return math.exp(top) * math.fsum(math.exp(t - top) for t in logs)


@functools.cache
def stream_size(k: int, min_shape: float) -> int:
    """Proposals ``M`` that ``k`` chi-square draws share (``chisquare``).

    The smallest ``M`` with ``P(Binomial(M, p) < k) <= k * CHI2_EXHAUST`` for
    ``p = 1 - MT_REJECT / min_shape``, a lower bound on the acceptance probability of every
    row's shape (the stream runs out only if fewer than ``k`` of its ``M`` proposals are
    accepted by the rows that need them; with each row's acceptance probability at least ``p``,
    that is at most the binomial tail).

    >>> stream_size(10, 1.0), stream_size(10, 45.0)
    (21, 14)
    """
    p = 1.0 - MT_REJECT / max(min_shape, 1.0)
    m = k
    while _binomial_below(m, k, p) > k * CHI2_EXHAUST:
        m += 1
    return m


def _first_after(ok: Array, m: int) -> Array:
    """``pick[i]`` = the first ``j > pick[i - 1]`` with ``ok[i, j]`` (``m - 1`` if none), rows in
    order (``pick[-1] = -1``), for ``ok`` of shape ``[k, m]``.

    With ``m <= 32`` each row's accepted positions are packed into one uint32, and the pass over
    the rows is a few integer operations per row (lowest set bit above the previous pick); else a
    masked minimum per row.
    """
    k = ok.shape[0]
    taken, picks = jnp.int32(-1), []
    if m <= 32:
        one = jnp.left_shift(jnp.uint32(1), jnp.arange(m, dtype=jnp.uint32))
        bits = jnp.sum(jnp.where(ok, one[None, :], jnp.uint32(0)), axis=1, dtype=jnp.uint32)
        for i in range(k):
            shift = (taken + 1).astype(jnp.uint32)  # in 0 .. 32
            above = jnp.where(shift < 32, jnp.left_shift(jnp.uint32(0xFFFFFFFF), shift), 0)
            free = bits[i] & above.astype(jnp.uint32)
            low = free & (~free + jnp.uint32(1))  # its lowest set bit
            first = jax.lax.population_count(low - jnp.uint32(1)).astype(jnp.int32)
            taken = jnp.where(free == 0, m - 1, first)
            picks.append(taken)
    else:
        pos = jnp.arange(m, dtype=jnp.int32)
        for i in range(k):
            taken = jnp.minimum(jnp.min(jnp.where(ok[i] & (pos > taken), pos, m)), m - 1)
            picks.append(taken)
    return jnp.stack(picks)


def chisquare(key: PRNGKey, df: Float[Array, " k"]) -> Float[Array, " k"]:
    """``k`` independent chi-square draws with ``df >= 1`` degrees of freedom, ``2 Gamma(df / 2)``.

    Marsaglia-Tsang rejection, the ``k`` draws sharing one stream of ``M`` proposals: a proposal
    is a (normal, uniform) pair, which does not depend on the shape, so draw ``i`` takes the first
    proposal after draw ``i - 1``'s that its own test accepts. The stream is i.i.d. and the
    position draw ``i - 1`` took is a stopping time, so the proposals after it are fresh: each
    draw is an exact Marsaglia-Tsang draw, independent of the others. Computed in fixed shape
    (no data-dependent loop under ``vmap``): the ``[k, M]`` accept matrix, then one pass over the
    draws picks the positions (``_first_after``).

    ``M = stream_size(k, min_shape)``: the stream runs out with probability below
    ``k * CHI2_EXHAUST = k * 2.9e-11`` (the former scheme, 8 proposals per draw, had up to
    ``k * 2.98e-11``). If it does run out, every draw left takes the stream's last proposal,
    accepted or not (as the former scheme took its last round when all 8 were rejected). With
    ``df`` concrete (as ``bartlett_factor`` passes it; not a tracer) the stream is sized for the
    smallest shape present (``M = 14`` for the ten shapes 45 .. 49.5 of n = 100, d = 10;
    ``M = 15`` for n = 32; ``M = 19`` for the nine of n = 10, down to shape 1) and only draws with
    ``df < 2`` draw a boost uniform; with ``df`` traced, for the worst shape (``M = 21`` for
    ``k = 10``) and every draw draws one. 2M + (boosts) uniform and normal numbers in all, where
    the former scheme drew 16 k + k.

    Shape ``a < 1`` (``df < 2``) uses ``Gamma(a) = Gamma(a + 1) U^(1/a)`` (shape ``a + 1 >= 1.5``
    in the test).

    >>> import jax, jax.numpy as jnp
    >>> x = jax.vmap(lambda k: chisquare(k, jnp.array([1.0, 7.0, 60.0])))(
    ...     jax.random.split(jax.random.key(0), 4000))
    >>> [round(float(v)) for v in x.mean(0)]
    [1, 7, 60]
    """
    try:
        static_df = np.asarray(df, np.float64)
    except jax.errors.TracerArrayConversionError:
        static_df = None
    df = jnp.asarray(df)
    dt, (k,) = df.dtype, df.shape
    if k == 0:
        return jnp.zeros((0,), dt)
    a = 0.5 * df
    boost = a < 1.0
    if static_df is None:
        min_shape, boosted = 1.0, list(range(k))
    else:
        sa = 0.5 * static_df
        min_shape = float(np.min(np.where(sa < 1.0, sa + 1.0, sa)))
        boosted = [i for i in range(k) if sa[i] < 1.0]
    dd = jnp.where(boost, a + 1.0, a) - 1.0 / 3.0
    c = 1.0 / jnp.sqrt(9.0 * dd)
    m = stream_size(k, min_shape)
    k_x, k_u, k_boost = rng.split(key, 3)
    tiny = jnp.finfo(dt).tiny
    x = rng.normal(k_x, (m,), dt)
    log_u = jnp.log(rng.uniform(k_u, (m,), dt, minval=tiny))
    v = (1.0 + c[:, None] * x[None, :]) ** 3  # [k, m]: every proposal tested for every draw
    log_v = jnp.log(jnp.maximum(v, tiny))
    ok = (v > 0) & (log_u[None, :] < 0.5 * x[None, :] ** 2 + dd[:, None] * (1.0 - v + log_v))
    pick = _first_after(ok, m)
    at = jnp.arange(m, dtype=jnp.int32)[None, :] == pick[:, None]
    x_pick = jnp.sum(jnp.where(at, x[None, :], 0.0), axis=1)
    g = dd * jnp.maximum((1.0 + c * x_pick) ** 3, tiny)
    if boosted:
        w = rng.uniform(k_boost, (len(boosted),), dt, minval=tiny)
        if static_df is None:
            g = jnp.where(boost, g * w ** (1.0 / a), g)
        else:
            ws = dict(zip(boosted, range(len(boosted)), strict=True))
            g = jnp.stack([g[i] * w[ws[i]] ** (1.0 / a[i]) if i in ws else g[i]
                           for i in range(k)])
    return 2.0 * g


def bartlett_factor(key: PRNGKey, d: int, dof: int, dtype=jnp.float32) -> Float[Array, "d d"]:
    """Lower-triangular ``A`` with ``A A^T ~ Wishart_d(dof, I)`` (Bartlett decomposition).

    ``A_ii = sqrt(chi^2_{dof - i})``, ``A_ij ~ N(0, 1)`` for ``i > j``; for ``dof < d`` (a singular
    Wishart: the scatter of ``dof + 1 <= d`` points) the columns ``j >= dof`` are zero.

    >>> import jax
    >>> a = bartlett_factor(jax.random.key(0), 3, 1)
    >>> bool((a[:, 1:] == 0).all()), bool(a[0, 0] > 0)
    (True, True)
    """
    k_chi, k_norm = rng.split(key)
    live = min(d, dof)  # rows with dof - i >= 1 degrees of freedom
    diag = jnp.sqrt(chisquare(k_chi, np.arange(dof, dof - live, -1).astype(np.dtype(dtype))))
    # the normals below the diagonal of the live columns j < dof, row by row
    width = [min(i, dof) for i in range(d)]
    z = rng.normal(k_norm, (sum(width),), dtype)
    start = np.cumsum([0, *width])
    zero = jnp.zeros((d,), dtype)
    rows = [jnp.concatenate([z[start[i]:start[i] + width[i]], zero[width[i]:i],
                             diag[i:i + 1] if i < live else zero[:1], zero[i + 1:]])
            for i in range(d)]
    return jnp.stack(rows)


def statistics(x: Float[Array, "m d"]) -> dict[str, Array]:
    """Sufficient statistics of the rows of ``x`` (all real) as a one-slot block.

    Returns ``{"count": [1], "real": [1], "mean": [1, d], "factor": [1, d, d]}`` with ``factor``
    lower triangular and ``factor factor^T`` the centred scatter (from a QR of the centred rows,
    so fewer rows than dimensions is fine).
    """
    m, d = x.shape
    mean = jnp.mean(x, axis=0)
    r = L.qr_r(x - mean[None, :])  # [min(m, d), d], r^T r = scatter
    factor = jnp.zeros((d, d), x.dtype).at[:, : r.shape[0]].set(r.T)
    count = jnp.full((1,), m, x.dtype)
    return {"count": count, "real": count, "mean": mean[None], "factor": factor[None]}


def merge(a: dict[str, Array], b: dict[str, Array]) -> dict[str, Array]:
    """Statistics of the union of two pools (Chan et al. pairwise update; exact).

    >>> import jax.numpy as jnp
    >>> x = jnp.arange(12.0).reshape(6, 2) ** 1.5
    >>> m, whole = merge(statistics(x[:2]), statistics(x[2:])), statistics(x)
    >>> scatter = lambda s: s["factor"][0] @ s["factor"][0].T
    >>> bool(jnp.allclose(scatter(m), scatter(whole), rtol=1e-4))
    True
    """
    ca, cb = a["count"][0], b["count"][0]
    total = ca + cb
    frac = cb / jnp.maximum(total, 1.0)
    delta = b["mean"][0] - a["mean"][0]
    fa, fb = a["factor"][0], b["factor"][0]
    scatter = fa @ fa.T + fb @ fb.T + (ca * frac) * (delta[:, None] * delta[None, :])
    return {
        "count": (a["count"] + b["count"]),
        "real": a["real"] + b["real"],
        "mean": (a["mean"][0] + frac * delta)[None],
        "factor": M.psd_cholesky(scatter)[None],
    }


def sample_statistics(
    key: PRNGKey, mean: Float[Array, " d"], root: Float[Array, "d d"], num: int
) -> dict[str, Array]:
    """Exact sufficient statistics of ``num`` draws from N(mean, root root^T), as a block."""
    d, dt = mean.shape[0], mean.dtype
    k_mean, k_wishart = rng.split(key)
    zbar = rng.normal(k_mean, (d,), dt) / jnp.sqrt(jnp.asarray(num, dt))
    return {
        "count": jnp.full((1,), num, dt),
        "real": jnp.zeros((1,), dt),
        "mean": (mean + root @ zbar)[None],
        "factor": (root @ bartlett_factor(k_wishart, d, num - 1, dt))[None],
    }


def statistics_regime(regime: str, n: int) -> Regime:
    """``replace`` or ``accumulate`` over a one-slot pool of Gaussian sufficient statistics
    (``pool.statistics_regime`` with ``statistics`` and ``merge``)."""
    if regime not in FAST_REGIMES:
        raise ValueError(f"regime={regime!r}: the statistics pool supports {FAST_REGIMES}")
    return R.statistics_regime(regime, n, statistics, merge)


def moment_nll(mean, cov, trace, truth):
    """Mean NLL of the held-out points under N(mean, cov) from their moments (``test_mean``,
    ``test_cov``, computed once per chain by the source; ``metrics.gaussian_nll_moments``), with
    the variance floor ``COLLAPSE_FLOOR * tr(Sigma_true) / d``."""
    floor = COLLAPSE_FLOOR * jnp.trace(truth["cov"]) / mean.shape[0]
    return M.gaussian_nll_moments(truth["test_mean"], truth["test_cov"], mean, cov, floor=floor,
                                  trace=trace)


def _fast_evaluate(params, real, hparams):
    """The sample path's metrics from the mean and lower-triangular root of the covariance."""
    del hparams
    mean, root = params["mean"], params["root"]
    truth = real.truth
    trace = jnp.sum(root**2)
    tiny = jnp.finfo(mean.dtype).tiny
    logdet = jnp.sum(jnp.log(jnp.maximum(jnp.diagonal(root) ** 2, tiny)))
    return {
        "trace_ratio": trace / jnp.trace(truth["cov"]),
        "logdet_ratio": logdet - truth["logdet"],
        "mean_error": jnp.sum((mean - truth["mean"]) ** 2),
        "w2": M.gaussian_w2_roots(mean, root, truth["mean"], truth["cov_sqrt"]),
        "nll": moment_nll(mean, root @ root.T, trace, truth),
    }


def make_fast(static: StaticConfig, ddof: int) -> GenerativeModel:
    """The Gaussian family under ``replace`` / ``accumulate`` on its statistics pool."""
    d, dt = static.d, jnp.dtype(static.dtype)

    def init(key, real, hparams):
        del key, real, hparams
        return {"mean": jnp.zeros((d,), dt), "root": jnp.eye(d, dtype=dt)}

    def fit(key, pool, params, hparams):
        del key, params, hparams
        stats = pool.data
        denom = jnp.maximum(stats["count"][0] - ddof, jnp.finfo(dt).tiny)
        return {"mean": stats["mean"][0], "root": stats["factor"][0] / jnp.sqrt(denom)}

    def sample(key, params, real, hparams, num):
        del real
        return sample_statistics(key, params["mean"], jnp.sqrt(hparams["scale"]) * params["root"],
                                 num)

    def collapsed(params, real, hparams):
        del hparams
        t_trace = jnp.trace(real.truth["cov"])
        return (jnp.sum(params["root"] ** 2) <= COLLAPSE_FLOOR * t_trace) & jnp.isfinite(t_trace)

    return GenerativeModel(init, fit, sample, _fast_evaluate, collapsed,
                           regime=statistics_regime(static.regime, static.n))
