"""Multivariate Gaussian refit on its own samples (Shumailov et al.; Kazdan et al.).

Real data: ``n0`` i.i.d. N(0, sigma^2 I_d). Fit: mean and MLE covariance (divide by the pool
size; option ``unbiased`` divides by size - 1). Sampling: ``mu + sqrt(scale) * L z`` with ``L`` the
symmetric (eigh) square root of the fitted covariance, so it works when the pool has n <= d points
and the covariance is singular. ``scale`` < 1 is the variance shrink of biased sampling (MAD's
lambda, Alemohammad et al.).

Metrics (generation g, against the true distribution):
    trace_ratio: tr(Sigma_g) / tr(Sigma_true).
    logdet_ratio: log det Sigma_g - log det Sigma_true (eigenvalues floored at float tiny, so a
        singular or collapsed covariance gives a large negative but finite value).
    mean_error: |mu_g - mu_true|^2.
    w2: 2-Wasserstein distance from N(mu_g, Sigma_g) to the true distribution.
    nll: mean negative log-likelihood of held-out real points (relative ridge 1e-6, plus a
        variance floor of ``COLLAPSE_FLOOR * tr(Sigma_true) / d`` so it stays finite when the
        covariance has collapsed to 0).

Exact fast path (option ``fast_path``, on by default, for ``replace`` and ``accumulate``): a fit
depends on its pool only through the sufficient statistics (count, mean, scatter), and the
statistics of ``n`` i.i.d. draws from N(mu, C = R R^T) have a known joint law, so they are drawn
without drawing the points:

    mean    = mu + R zbar,        zbar ~ N(0, I_d / n)
    scatter = (R A)(R A)^T,       A A^T ~ Wishart_d(n - 1, I), independent of the mean

with ``A`` the lower-triangular Bartlett factor (``A_ii = sqrt(chi^2_{n-1-i})``, ``A_ij ~ N(0, 1)``
below the diagonal; for n - 1 < d the Wishart is singular and the columns j >= n - 1 are 0). That
is d(d+1)/2 + d random numbers per generation instead of n d. The model's parameters are the mean
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

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from collapse_jax import metrics as M
from collapse_jax.config import (
    NONNEGATIVE,
    POSITIVE,
    ConfigError,
    StaticConfig,
    declare_float64,
)
from collapse_jax.model import GenerativeModel, Source, register_model, register_source
from collapse_jax.pool import Pool, Regime, masked_cov
from collapse_jax.types import PRNGKey, RealData

#: Trace ratio at or below which a chain counts as collapsed (and the nll variance floor).
COLLAPSE_FLOOR = 1e-6


@register_source("gaussian")
def gaussian_source(static: StaticConfig) -> Source:
    """N(0, sigma^2 I_d): ``n0`` training and ``n_test`` held-out points per chain."""
    n0, n_test, d, dt = static.n0, static.n_test, static.d, jnp.dtype(static.dtype)

    def draw(key, hparams, args):
        del args
        k_train, k_test = jax.random.split(key)
        sigma = hparams["sigma"]
        train = sigma * jax.random.normal(k_train, (n0, d), dt)
        test = sigma * jax.random.normal(k_test, (n_test, d), dt)
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
        return hparams["sigma"] * jax.random.normal(key, (num, d), jnp.float32)

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
        return {"mean": jnp.zeros((d,), dt), "cov": jnp.eye(d, dtype=dt)}

    def fit(key, pool, params, hparams):
        del key, params, hparams
        mean, cov = masked_cov(pool.data, pool.valid.astype(dt), ddof=ddof)
        return {"mean": mean, "cov": cov}

    def sample(key, params, real, hparams, num):
        del real
        z = jax.random.normal(key, (num, d), dt)
        root = M.psd_sqrt(params["cov"]) * jnp.sqrt(hparams["scale"])
        return params["mean"][None, :] + z @ root

    def evaluate(params, real, hparams):
        del hparams
        mean, cov = params["mean"], params["cov"]
        t_mean, t_cov = real.truth["mean"], real.truth["cov"]
        logdet = jnp.sum(jnp.log(M.floored_eigvalsh(cov)))
        t_logdet = jnp.sum(jnp.log(jnp.linalg.eigvalsh(t_cov)))
        return {
            "trace_ratio": jnp.trace(cov) / jnp.trace(t_cov),
            "logdet_ratio": logdet - t_logdet,
            "mean_error": jnp.sum((mean - t_mean) ** 2),
            "w2": M.gaussian_w2(mean, cov, t_mean, t_cov),
            "nll": M.gaussian_nll(
                real.test, mean, cov, floor=COLLAPSE_FLOOR * jnp.trace(t_cov) / d
            ),
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

#: Marsaglia-Tsang proposals per chi-square draw. Each is accepted with probability >= 0.95, so
#: all 8 are rejected with probability < 0.049^8 < 4e-11 (then the last proposal is used).
CHI2_ROUNDS = 8


def chisquare(key: PRNGKey, df: Float[Array, " k"]) -> Float[Array, " k"]:
    """Chi-square draws with ``df >= 1`` degrees of freedom, ``2 Gamma(df / 2)``.

    Marsaglia-Tsang rejection with a fixed number of proposals drawn at once (``CHI2_ROUNDS``),
    the first accepted one kept: no data-dependent loop under ``vmap``, and exact except with
    probability < 4e-11 per draw. Shape ``a < 1`` (df = 1) uses ``Gamma(a) = Gamma(a+1) U^(1/a)``.

    >>> import jax, jax.numpy as jnp
    >>> x = jax.vmap(lambda k: chisquare(k, jnp.array([1.0, 7.0])))(
    ...     jax.random.split(jax.random.key(0), 4000))
    >>> [round(float(v), 1) for v in x.mean(0)]
    [1.0, 7.0]
    """
    dt = df.dtype
    a = 0.5 * df
    boost = a < 1.0
    shape = jnp.where(boost, a + 1.0, a)
    dd = shape - 1.0 / 3.0
    c = 1.0 / jnp.sqrt(9.0 * dd)
    k_x, k_u, k_boost = jax.random.split(key, 3)
    rounds = (CHI2_ROUNDS, *df.shape)
    x = jax.random.normal(k_x, rounds, dt)
    u = jax.random.uniform(k_u, rounds, dt, minval=jnp.finfo(dt).tiny)
    v = (1.0 + c[None] * x) ** 3
    log_v = jnp.log(jnp.maximum(v, jnp.finfo(dt).tiny))
    ok = (v > 0) & (jnp.log(u) < 0.5 * x**2 + dd[None] - dd[None] * v + dd[None] * log_v)
    first = jnp.argmax(ok | (jnp.arange(CHI2_ROUNDS) == CHI2_ROUNDS - 1)[:, None], axis=0)
    g = dd * jnp.maximum(jnp.take_along_axis(v, first[None], axis=0)[0], jnp.finfo(dt).tiny)
    w = jax.random.uniform(k_boost, df.shape, dt, minval=jnp.finfo(dt).tiny)
    g = jnp.where(boost, g * w ** (1.0 / a), g)
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
    k_chi, k_norm = jax.random.split(key)
    idx = jnp.arange(d)
    df = (dof - idx).astype(dtype)
    live = df > 0
    diag = jnp.where(live, jnp.sqrt(chisquare(k_chi, jnp.where(live, df, 1.0))), 0.0)
    rows, cols = jnp.tril_indices(d, -1)  # only the d(d-1)/2 normals below the diagonal
    z = jax.random.normal(k_norm, rows.shape, dtype)
    lower = jnp.zeros((d, d), dtype).at[rows, cols].set(jnp.where(cols < dof, z, 0.0))
    return lower + jnp.diag(diag)


def statistics(x: Float[Array, "m d"]) -> dict[str, Array]:
    """Sufficient statistics of the rows of ``x`` (all real) as a one-slot block.

    Returns ``{"count": [1], "real": [1], "mean": [1, d], "factor": [1, d, d]}`` with ``factor``
    lower triangular and ``factor factor^T`` the centred scatter (from a QR of the centred rows,
    so fewer rows than dimensions is fine).
    """
    m, d = x.shape
    mean = jnp.mean(x, axis=0)
    r = jnp.linalg.qr(x - mean[None, :], mode="r")  # [min(m, d), d], r^T r = scatter
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
    k_mean, k_wishart = jax.random.split(key)
    zbar = jax.random.normal(k_mean, (d,), dt) / jnp.sqrt(jnp.asarray(num, dt))
    return {
        "count": jnp.full((1,), num, dt),
        "real": jnp.zeros((1,), dt),
        "mean": (mean + root @ zbar)[None],
        "factor": (root @ bartlett_factor(k_wishart, d, num - 1, dt))[None],
    }


def statistics_regime(regime: str, n: int) -> Regime:
    """``replace`` or ``accumulate`` over a one-slot pool holding sufficient statistics.

    ``pool_size`` and ``real_fraction`` are those of the pool the statistics summarise.
    """
    if regime not in FAST_REGIMES:
        raise ValueError(f"regime={regime!r}: the statistics pool supports {FAST_REGIMES}")

    def init(real_train):
        return Pool(statistics(real_train), jnp.ones((1,), jnp.bool_), jnp.zeros((1,), jnp.int32),
                    jnp.int32(1), jnp.bool_(False))

    def update(pool, block, generation, key, hparams):
        del key, hparams
        if regime == "replace":
            return pool._replace(data=block, origin=jnp.full((1,), generation, jnp.int32))
        return pool._replace(data=merge(pool.data, block))

    def view(pool, key, hparams):
        del key, hparams
        return pool

    def metrics(view):
        size = view.data["count"][0]
        return {"pool_size": size, "real_fraction": view.data["real"][0] / jnp.maximum(size, 1.0)}

    return Regime(regime, 1, n, init, update, view, metrics=metrics)


def _fast_evaluate(params, real, hparams):
    """The sample path's metrics from the mean and lower-triangular root of the covariance."""
    del hparams
    mean, root = params["mean"], params["root"]
    d, dt = mean.shape[0], mean.dtype
    truth = real.truth
    t_trace = jnp.trace(truth["cov"])
    trace = jnp.sum(root**2)
    tiny = jnp.finfo(dt).tiny
    logdet = jnp.sum(jnp.log(jnp.maximum(jnp.diagonal(root) ** 2, tiny)))
    # W2 cross term tr((T C T)^1/2) = nuclear norm of T R, T the true covariance's root
    tr_ = truth["cov_sqrt"] @ root
    cross = jnp.sum(jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(tr_.T @ tr_), 0.0)))
    w2sq = jnp.sum((mean - truth["mean"]) ** 2) + trace + t_trace - 2.0 * cross
    # NLL from the test moments: mean Mahalanobis = tr(Cr^-1 (S + delta delta^T)), same ridge and
    # floor as metrics.gaussian_nll
    eye = jnp.eye(d, dtype=dt)
    ridged = root @ root.T + (1e-6 * jnp.maximum(trace / d, tiny)
                              + COLLAPSE_FLOOR * t_trace / d) * eye
    chol = jnp.linalg.cholesky(ridged)
    inv = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)  # chol^-1
    delta = truth["test_mean"] - mean
    second = truth["test_cov"] + delta[:, None] * delta[None, :]
    maha = jnp.sum((inv @ second) * inv)
    nll = 0.5 * maha + jnp.sum(jnp.log(jnp.diagonal(chol))) + 0.5 * d * jnp.log(2.0 * jnp.pi)
    return {
        "trace_ratio": trace / t_trace,
        "logdet_ratio": logdet - truth["logdet"],
        "mean_error": jnp.sum((mean - truth["mean"]) ** 2),
        "w2": jnp.sqrt(jnp.maximum(w2sq, 0.0)),
        "nll": nll,
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
