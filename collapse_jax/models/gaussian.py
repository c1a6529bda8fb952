"""Multivariate Gaussian refit on its own samples (Shumailov et al.; Kazdan et al.).

Real data: ``n0`` i.i.d. N(0, sigma^2 I_d). Fit: mean and MLE covariance (divide by the pool
size; option ``unbiased`` divides by size - 1). Sampling: ``mu + sqrt(scale) * R z`` with ``R`` the
lower-triangular root of the fitted covariance from a QR of the centred points
(``pool.masked_root``, computed by the fit), so it works when the pool has n <= d points and the
covariance is singular, and keeps the smallest directions of an ill-conditioned one (a root of
the float32 scatter loses them once the eigenvalues span ~1e6, which the replace chain reaches).
``scale`` < 1 is the variance shrink of biased sampling (MAD's lambda, Alemohammad et al.).

Metrics (generation g, against the true distribution):
    trace_ratio: tr(Sigma_g) / tr(Sigma_true).
    logdet_ratio: log det Sigma_g - log det Sigma_true (the sum of the logs of the squared
        diagonal of the triangular root, each floored at float tiny, so a singular or collapsed
        covariance gives a large negative but finite value).
    mean_error: |mu_g - mu_true|^2.
    w2: 2-Wasserstein distance from N(mu_g, Sigma_g) to the true distribution.
    nll: mean negative log-likelihood of held-out real points (relative ridge 1e-6, plus a
        variance floor of ``COLLAPSE_FLOOR * tr(Sigma_true) / d`` so it stays finite when the
        covariance has collapsed to 0), from the points' mean and covariance (computed once per
        chain), not a solve against every point each generation.

Exact fast path (option ``fast_path``, on by default, for ``replace`` and ``accumulate``): a fit
depends on its pool only through the sufficient statistics (count, mean, scatter), and the
statistics of ``n`` i.i.d. draws from N(mu, C = R R^T) have a known joint law, so they are drawn
without drawing the points:

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
are those of the sample-based path, computed from ``R`` (log-det from its diagonal) and from the
test set's moments (computed once per chain by the source). ``accumulate_subsample`` and the
other regimes need the points and use the sample-based path.

Flag ``collapsed``: tr(Sigma_g) <= ``COLLAPSE_FLOOR`` * tr(Sigma_true) (covariance of rank 0 up to
rounding: the chain now samples one point over and over).

References:
    Bartlett 1933, "On the theory of statistical regression"; Anderson 2003, "An Introduction to
        Multivariate Statistical Analysis", 3rd ed., sec. 7.2 (Wishart, Bartlett decomposition).
    Chan, Golub, LeVeque 1979, "Updating formulae and a pairwise algorithm for computing sample
        variances".
    Marsaglia & Tsang 2000, "A simple method for generating gamma variables".
    Shumailov et al. 2024, "AI models collapse when trained on recursively generated data".
    Kazdan et al. 2024, "Collapse or Thrive?", arXiv:2410.16713.
    Alemohammad et al. 2023, "Self-Consuming Generative Models Go MAD", arXiv:2307.01850.
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
from collapse_jax import pool as P
from collapse_jax import rng
from collapse_jax.config import (
    NONNEGATIVE,
    POSITIVE,
    ConfigError,
    StaticConfig,
    declare_float64,
)
from collapse_jax.model import GenerativeModel, Source, register_model, register_source
from collapse_jax.pool import Regime, masked_root
from collapse_jax.types import PRNGKey, RealData

#: Trace ratio at or below which a chain counts as collapsed (and the nll variance floor).
COLLAPSE_FLOOR = 1e-6


@register_source("gaussian")
def gaussian_source(static: StaticConfig) -> Source:
    """N(0, sigma^2 I_d): ``n0`` training and ``n_test`` held-out points per chain."""
    n0, n_test, d, dt = static.n0, static.n_test, static.d, jnp.dtype(static.dtype)

    def draw(key, hparams, args):
        del args
        k_train, k_test = rng.split(key)
        sigma = hparams["sigma"]
        train = sigma * rng.normal(k_train, (n0, d), dt)
        test = sigma * rng.normal(k_test, (n_test, d), dt)
        eye = jnp.eye(d, dtype=dt)
        test_mean = jnp.mean(test, axis=0)
        tc = test - test_mean[None, :]
        truth = {
            "mean": jnp.zeros((d,), dt),
            "cov": (sigma**2) * eye,
            "cov_sqrt": sigma * eye,
            "logdet": d * jnp.log(sigma**2),  # once per chain, not per generation
            # once per chain, for the fast path's NLL from moments
            "test_mean": test_mean,
            "test_cov": (tc.T @ tc) / n_test,
        }
        return RealData(train, test, truth)

    def fresh(key, hparams, args, real, num):
        del args, real
        return hparams["sigma"] * rng.normal(key, (num, d), jnp.float32)

    return Source(lambda s: {}, draw, fresh)


def _check(static: StaticConfig) -> None:
    for field, value in (("n", static.n), ("n0", static.n0), ("subsample", static.subsample)):
        if value is not None and value < 2:
            raise ConfigError(
                f"{field}={value}: a Gaussian covariance needs at least 2 points per fit; "
                f"use {field} >= 2 (and n > d={static.d} for a full-rank fit)"
            )


@register_model(
    "gaussian",
    source="gaussian",
    hparams={"sigma": 1.0, "scale": 1.0},
    options={"unbiased": (False, True), "fast_path": (True, False)},
    ranges={"sigma": POSITIVE, "scale": NONNEGATIVE},
    metrics=("trace_ratio", "logdet_ratio", "mean_error", "w2", "nll"),
    check=_check,
    doc="multivariate Gaussian: mean + covariance (MLE or unbiased); exact sufficient-statistics "
        "fast path for replace/accumulate",
)
def make_gaussian(static: StaticConfig) -> GenerativeModel:
    """Gaussian family for a StaticConfig (options: ``unbiased``, ``fast_path``).

    With ``fast_path`` (default) and regime ``replace`` or ``accumulate`` the model brings its own
    regime, a pool of sufficient statistics (``statistics_regime``); otherwise points are sampled.
    """
    d, dt = static.d, jnp.dtype(static.dtype)
    ddof = 1 if static.option("unbiased", False) else 0
    if static.option("fast_path", True) and static.regime in FAST_REGIMES:
        return _make_fast(static, ddof)

    def init(key, real, hparams):
        del key, real, hparams
        return {"mean": jnp.zeros((d,), dt), "cov": jnp.eye(d, dtype=dt),
                "root": jnp.eye(d, dtype=dt), "logdet": jnp.zeros((), dt)}

    def fit(key, pool, params, hparams):
        del key, params, hparams
        mean, root = masked_root(pool.data, pool.valid.astype(dt), ddof=ddof)
        logdet = jnp.sum(jnp.log(jnp.maximum(jnp.diagonal(root) ** 2, jnp.finfo(dt).tiny)))
        return {"mean": mean, "cov": root @ root.T, "root": root, "logdet": logdet}

    def sample(key, params, real, hparams, num):
        del real
        # [d, num], not [num, d]: XLA CPU vectorises the generator along the last axis, and
        # 10 is too short (4x slower at d = 10, n = 100)
        z = rng.normal(key, (d, num), dt)
        root = params["root"] * jnp.sqrt(hparams["scale"])  # root root^T = cov
        return params["mean"][None, :] + (root @ z).T

    def evaluate(params, real, hparams):
        del hparams
        mean, cov = params["mean"], params["cov"]
        t_mean, t_cov = real.truth["mean"], real.truth["cov"]
        return {
            "trace_ratio": jnp.trace(cov) / jnp.trace(t_cov),
            "logdet_ratio": params["logdet"] - real.truth["logdet"],
            "mean_error": jnp.sum((mean - t_mean) ** 2),
            "w2": M.gaussian_w2_roots(mean, params["root"], t_mean, real.truth["cov_sqrt"]),
            "nll": _moment_nll(mean, cov, jnp.trace(cov), real.truth),
        }

    def collapsed(params, real, hparams):
        del hparams
        t_trace = jnp.trace(real.truth["cov"])
        return (jnp.trace(params["cov"]) <= COLLAPSE_FLOOR * t_trace) & jnp.isfinite(t_trace)

    return GenerativeModel(init, fit, sample, evaluate, collapsed)


# ----------------------------------------------------------------------------------------------
# Exact fast path: a pool of sufficient statistics

#: Regimes whose fits depend on the pool only through its sufficient statistics.
FAST_REGIMES = ("replace", "accumulate")

#: Upper bound on ``a`` times the rejection probability of one Marsaglia-Tsang proposal at shape
#: ``a >= 1``: ``a (1 - p(a))`` decreases from 0.04833 at a = 1 to 1/36 as a -> inf (quadrature;
#: checked in tests/test_gaussian_sampling.py), so ``1 - p(a) <= MT_REJECT / a``.
MT_REJECT = 0.0484

#: Largest probability, per chi-square draw, that the shared proposal stream runs out. The former
#: scheme (8 proposals per draw) ran out with probability (1 - p(1))^8 = 2.98e-11 at the worst
#: shape; the stream is sized to stay below it.
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
    return P.statistics_regime(regime, n, statistics, merge)


def _moment_nll(mean, cov, trace, truth):
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
        "nll": _moment_nll(mean, root @ root.T, trace, truth),
    }


def _make_fast(static: StaticConfig, ddof: int) -> GenerativeModel:
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


declare_float64("gaussian")  # computes in static.dtype throughout
