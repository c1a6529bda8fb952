"""Gaussian mixture refit on its own samples by a fixed number of EM iterations (Shumailov et al.).

Fit: ``em_iters`` (static option) EM iterations as a ``lax.scan`` on the weighted pool
(weights = mask, times ``real_weight`` on real slots), with full or diagonal covariances (option
``covariance``). Initialisation (option ``init``): ``warm`` starts every generation from the
previous generation's mixture (generation 0 from a k-means++ seeding of D0); ``kmeans++`` reseeds
from the pool every generation (D^2 sampling of K centres, equal weights, the pool covariance).
Singular covariances are guarded by adding ``max(RIDGE, RIDGE_ULPS * eps * tr Sigma_k) * I``
after every M step (``regularize``: scikit-learn's ``reg_covar`` of 1e-6, raised for wide
components to a few float rounding units of their trace, without which the Cholesky factor of a
rank-deficient float32 covariance is NaN once its spread exceeds ~10); a component whose
responsibility mass falls below ``1e-6`` of the pool keeps its previous mean and covariance (its
weight still follows the data, so it can die out: weight exactly 0, no NaN).
Sampling: a component drawn from the weights, then ``mu_k + sqrt(scale) L_k z`` (``L_k`` the
Cholesky factor; ``scale`` is the variance scale of biased sampling).

Source ``mixture``: K equal-weight isotropic components N(mu_k, sigma^2 I) with means equally
spaced on a circle of radius ``radius`` in the first two coordinates (on a segment
``[-radius, radius]`` when d = 1); the true means are ``truth["means"]``. The toy 2-D sources of
``kde`` (moons, circles, swiss_roll) also work (no true means: ``means_dist`` is then absent).

Metrics:
    nll: mean negative log-likelihood of held-out real points.
    weight_entropy: entropy of the mixture weights (log K when balanced, 0 when one is left).
    trace_ratio: total variance of the fitted mixture over that of the held-out set.
    means_dist: matched squared distance between fitted and true means, the symmetric chamfer
        ``(mean_k min_j |m*_k - m_j|^2 + sum_j pi_j min_k |m_j - m*_k|^2) / 2`` (0 iff the
        fitted means with weight sit on true means and every true mean is covered).

Flag ``collapsed``: some live component (weight > ``MIN_MASS``) has shrunk to a point, i.e. its
covariance is the ridge alone up to ``COLLAPSE_FLOOR`` of the held-out spread,
``tr Sigma_k - d * RIDGE <= COLLAPSE_FLOOR * tr Cov(test)`` (EM's singular solution: the component
sits on a single distinct point, e.g. every component under sampling ``scale = 0``). A component
that lost all its weight is dead, not collapsed.

References:
    Shumailov et al. 2024, "AI models collapse when trained on recursively generated data",
        Nature 631 (GMM experiments).
    Dempster, Laird, Rubin 1977, "Maximum likelihood from incomplete data via the EM algorithm".
    Arthur & Vassilvitskii 2007, "k-means++: the advantages of careful seeding".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from collapse_jax import linalg as L
from collapse_jax.config import NONNEGATIVE, POSITIVE, ConfigError, StaticConfig
from collapse_jax.model import GenerativeModel, register_model
from collapse_jax.pool import masked_cov, origin_weights
from collapse_jax.pool import sample_weighted_indices as _sample_idx

#: Added to every covariance's diagonal after the M step (scikit-learn's ``reg_covar``).
RIDGE = 1e-6
#: ... or this many rounding units (``eps`` of the dtype) of the covariance's trace if larger.
RIDGE_ULPS = 32
#: Spread (over that of the held-out set) at or below which a live component counts as a point.
COLLAPSE_FLOOR = 1e-6
#: Components with less than this fraction of the pool's weight keep their mean and covariance.
MIN_MASS = 1e-6


# ----------------------------------------------------------------------------------------------
# EM on a weighted point set


def component_logpdf(
    x: Float[Array, "m d"], means: Float[Array, "k d"], covs: Float[Array, "k d d"]
) -> Float[Array, "m k"]:
    """``log N(x_i; mu_k, Sigma_k)`` for every point and component (Cholesky)."""
    d = x.shape[1]
    chol = L.cholesky(covs)  # [k, d, d]
    eye = jnp.broadcast_to(jnp.eye(d, dtype=x.dtype), covs.shape)
    inv_chol = L.solve_triangular(chol, eye, lower=True)  # L^-1, [k, d, d]
    # |L^-1 (x - mu)|^2 with the mean folded in: one [m, d] x [d, k d] matmul, no [k, m, d] temp
    z = (x @ inv_chol.reshape(-1, d).T).reshape(x.shape[0], -1, d)  # [m, k, d]
    z = z - jnp.einsum("kij,kj->ki", inv_chol, means)[None, :, :]
    maha = jnp.sum(z**2, axis=-1)  # [m, k]
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)  # [k]
    return -0.5 * (maha + logdet[None, :] + d * jnp.log(2.0 * jnp.pi))


def regularize(covs: Float[Array, "k d d"]) -> Float[Array, "k d d"]:
    """``Sigma_k + max(RIDGE, RIDGE_ULPS * eps * tr Sigma_k) I``: positive definite in float32.

    Rounding leaves the null directions of a rank-deficient covariance with eigenvalues of about
    ``eps * tr Sigma`` of either sign; an absolute ridge alone is below that once the spread is
    large, and the Cholesky factor is NaN.

    >>> import jax.numpy as jnp
    >>> c = regularize(jnp.array([[[1e4, 1e4], [1e4, 1e4]]]))  # rank 1, spread 2e4
    >>> bool(jnp.all(jnp.isfinite(jnp.linalg.cholesky(c))))
    True
    >>> round(float(regularize(jnp.zeros((1, 2, 2)))[0, 0, 0]), 12)  # a point: the ridge alone
    1e-06
    """
    d = covs.shape[-1]
    eps = jnp.finfo(covs.dtype).eps
    ridge = jnp.maximum(RIDGE, RIDGE_ULPS * eps * jnp.trace(covs, axis1=1, axis2=2))
    return covs + ridge[:, None, None] * jnp.eye(d, dtype=covs.dtype)[None, :, :]


def _log_weights(weights: Float[Array, " k"]) -> Float[Array, " k"]:
    return jnp.log(jnp.maximum(weights, jnp.finfo(weights.dtype).tiny))


def mixture_loglik(x, w, params) -> Float[Array, ""]:
    """Weighted mean log-likelihood ``sum_i w_i log p(x_i) / sum_i w_i`` of a mixture."""
    logw = _log_weights(params["weights"])
    lp = component_logpdf(x, params["means"], params["covs"]) + logw[None, :]
    ll = jax.nn.logsumexp(lp, axis=1)
    return jnp.sum(w * ll) / jnp.maximum(jnp.sum(w), jnp.finfo(w.dtype).tiny)


def em_step(x, w, params, diagonal: bool = False):
    """One EM iteration on points ``x`` ``[m, d]`` with weights ``w`` ``[m]`` (see module doc)."""
    d = x.shape[1]
    logw = _log_weights(params["weights"])
    lp = component_logpdf(x, params["means"], params["covs"]) + logw[None, :]
    resp = jnp.exp(lp - jax.nn.logsumexp(lp, axis=1, keepdims=True)) * w[:, None]  # [m, k]
    mass = jnp.sum(resp, axis=0)  # [k]
    total = jnp.maximum(jnp.sum(w), jnp.finfo(w.dtype).tiny)
    alive = mass > MIN_MASS * total
    # multiply by one reciprocal (not two divisions by the same denominator): XLA rewrites
    # a / broadcast(b) differently on 1 and N devices (see pool.safe_reciprocal)
    inv = 1.0 / jnp.where(alive, mass, 1.0)
    means = (resp.T @ x) * inv[:, None]
    diff = x[None, :, :] - means[:, None, :]  # [k, m, d] (centred: no cancellation)
    covs = jnp.matmul(jnp.swapaxes(resp.T[:, :, None] * diff, 1, 2), diff) * inv[:, None, None]
    if diagonal:
        covs = covs * jnp.eye(d, dtype=x.dtype)[None, :, :]
    covs = regularize(covs)
    means = jnp.where(alive[:, None], means, params["means"])
    covs = jnp.where(alive[:, None, None], covs, params["covs"])
    return {"weights": mass / total, "means": means, "covs": covs}


def kmeans_pp(key, x, w, k: int, diagonal: bool = False):
    """k-means++ seeding on weighted points: K centres by D^2 sampling, shared pool covariance."""
    d = x.shape[1]
    k_first, k_rest = jax.random.split(key)
    first = x[_sample_idx(k_first, w, 1)[0]]
    d2 = jnp.sum((x - first[None, :]) ** 2, axis=1)

    def pick(d2, u):  # inverse CDF of the D^2 weights (uniforms drawn up front: no keys in scan)
        csum = jnp.cumsum(w * d2)
        i = jnp.minimum(jnp.searchsorted(csum, u * csum[-1], side="right"), x.shape[0] - 1)
        c = x[i]
        return jnp.minimum(d2, jnp.sum((x - c[None, :]) ** 2, axis=1)), c

    _, rest = jax.lax.scan(pick, d2, jax.random.uniform(k_rest, (k - 1,), x.dtype))
    means = jnp.concatenate([first[None, :], rest], axis=0)
    _, cov = masked_cov(x, w)
    if diagonal:
        cov = cov * jnp.eye(d, dtype=x.dtype)
    return {
        "weights": jnp.full((k,), 1.0 / k, x.dtype),
        "means": means,
        "covs": jnp.broadcast_to(regularize(cov[None, :, :]), (k, d, d)),
    }


def _chamfer(means, weights, truth):
    d2 = jnp.sum((truth[:, None, :] - means[None, :, :]) ** 2, axis=-1)  # [k_true, k]
    cover = jnp.mean(jnp.min(d2, axis=1))
    precision = jnp.sum(weights * jnp.min(d2, axis=0))
    return 0.5 * (cover + precision)


def _check(static: StaticConfig) -> None:
    source = static.source or "mixture"
    if source in ("moons", "circles", "swiss_roll") and static.d != 2:
        raise ConfigError(f"d={static.d}: source {source!r} is 2-D; set d=2")
    k = static.option("components", 3)
    if static.n0 < k:
        raise ConfigError(f"n0={static.n0} < components={k}: EM needs at least K real points")


@register_model(
    "gmm",
    source="mixture",
    hparams={"sigma": 0.5, "radius": 3.0, "scale": 1.0, "real_weight": 1.0, "noise": 0.05},
    ranges={"sigma": POSITIVE, "radius": NONNEGATIVE, "scale": NONNEGATIVE,
            "real_weight": NONNEGATIVE, "noise": NONNEGATIVE},
    options={
        "components": (3, 1, 2, 4, 5, 8, 10),
        "covariance": ("full", "diag"),
        "init": ("warm", "kmeans++"),
        "em_iters": (20, 1, 5, 10, 50, 100),
    },
    metrics=("nll", "weight_entropy", "trace_ratio", "means_dist"),
    check=_check,
    doc="K-component Gaussian mixture fit by fixed-iteration EM (full/diag), warm or k-means++",
    example={"n0": 16, "n": 16, "d": 2, "n_test": 16},
    describe={
        "sigma": "standard deviation of each true component (source 'mixture')",
        "radius": "radius of the circle the true component means sit on",
        "scale": "variance scale of the components when sampling (1 = the fitted mixture)",
        "real_weight": "weight of a real point in the fit relative to a synthetic one",
        "noise": "standard deviation of the toy sources' noise (2-D toy sources)",
        "components": "number of mixture components K",
        "covariance": "full or diagonal component covariances",
        "init": "EM starts from the previous fit (warm) or from k-means++ centres",
        "em_iters": "EM iterations per generation (fixed, inside the scan)",
    },
)
def make_gmm(static: StaticConfig) -> GenerativeModel:
    """GMM family for a StaticConfig (options ``components``, ``covariance``, ``init``,
    ``em_iters``)."""
    k, d = static.option("components", 3), static.d
    diagonal = static.option("covariance", "full") == "diag"
    warm = static.option("init", "warm") == "warm"
    iters = static.option("em_iters", 20)

    def init(key, real, hparams):
        del hparams
        x = real.train
        return kmeans_pp(key, x, jnp.ones(x.shape[:1], jnp.float32), k, diagonal)

    def fit(key, pool, params, hparams):
        w = origin_weights(pool, hparams["real_weight"])
        start = params if warm else kmeans_pp(key, pool.data, w, k, diagonal)

        def body(p, _):
            return em_step(pool.data, w, p, diagonal), None

        out, _ = jax.lax.scan(body, start, None, length=iters)
        return out

    def sample(key, params, real, hparams, num):
        del real
        k_c, k_z = jax.random.split(key)
        c = jax.random.categorical(k_c, _log_weights(params["weights"]), shape=(num,))
        chol = L.cholesky(params["covs"])  # [k, d, d]
        z = jax.random.normal(k_z, (num, d), jnp.float32)
        noise = jnp.einsum("nij,nj->ni", chol[c], z)
        return params["means"][c] + jnp.sqrt(hparams["scale"]) * noise

    def evaluate(params, real, hparams):
        del hparams
        x = real.test
        ones = jnp.ones(x.shape[:1], jnp.float32)
        wts, means, covs = params["weights"], params["means"], params["covs"]
        mix_mean = wts @ means
        centred = means - mix_mean[None, :]
        total_var = jnp.sum(wts * (jnp.trace(covs, axis1=1, axis2=2)
                                   + jnp.sum(centred**2, axis=1)))
        _, t_cov = masked_cov(x, ones)
        alive = wts > 0
        out = {
            "nll": -mixture_loglik(x, ones, params),
            "weight_entropy": -jnp.sum(jnp.where(alive, wts * _log_weights(wts), 0.0)),
            "trace_ratio": total_var / jnp.trace(t_cov),
        }
        if "means" in real.truth:
            out["means_dist"] = _chamfer(means, wts, real.truth["means"])
        return out

    def collapsed(params, real, hparams):
        del hparams
        _, t_cov = masked_cov(real.test, jnp.ones(real.test.shape[:1], jnp.float32))
        t_trace = jnp.trace(t_cov)
        spread = jnp.trace(params["covs"], axis1=1, axis2=2) - d * RIDGE
        point = (params["weights"] > MIN_MASS) & (spread <= COLLAPSE_FLOOR * t_trace)
        return jnp.any(point) & jnp.isfinite(t_trace)

    return GenerativeModel(init, fit, sample, evaluate, collapsed)
