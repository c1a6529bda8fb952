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
The exact fast path for ``replace`` and ``accumulate`` (option ``fast_path``, on by default)
draws the sufficient statistics of the samples instead of the samples: ``gaussian_fast.py``.
``accumulate_subsample`` and the other regimes need the points and use the sample-based path here.


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

import jax.numpy as jnp

from collapse_jax import metrics as M
from collapse_jax import rng
from collapse_jax.config import NONNEGATIVE, POSITIVE, ConfigError, StaticConfig
from collapse_jax.model import GenerativeModel, register_model
from collapse_jax.models.gaussian_fast import COLLAPSE_FLOOR, FAST_REGIMES, make_fast, moment_nll
from collapse_jax.pool import masked_root


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
    float64=True,
    doc="multivariate Gaussian: mean + covariance (MLE or unbiased); exact sufficient-statistics "
        "fast path for replace/accumulate",
    describe={
        "sigma": "standard deviation of the true N(0, sigma^2 I_d) the real data come from",
        "scale": "variance scale of sampling: draws from N(mu, scale * Sigma); < 1 is the "
                 "variance shrink of biased sampling (1 = the fitted model)",
        "unbiased": "divide the covariance by n - 1 instead of n (MLE)",
        "fast_path": "replace / accumulate draw the sufficient statistics of the samples "
                     "instead of the samples (exact, much faster)",
    },
)
def make_gaussian(static: StaticConfig) -> GenerativeModel:
    """Gaussian family for a StaticConfig (options: ``unbiased``, ``fast_path``).

    With ``fast_path`` (default) and regime ``replace`` or ``accumulate`` the model brings its own
    regime, a pool of sufficient statistics (``statistics_regime``); otherwise points are sampled.
    """
    d, dt = static.d, jnp.dtype(static.dtype)
    ddof = 1 if static.option("unbiased", False) else 0
    if static.option("fast_path", True) and static.regime in FAST_REGIMES:
        return make_fast(static, ddof)

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
        # d is usually the short one
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
            "nll": moment_nll(mean, cov, jnp.trace(cov), real.truth),
        }

    def collapsed(params, real, hparams):
        del hparams
        t_trace = jnp.trace(real.truth["cov"])
        return (jnp.trace(params["cov"]) <= COLLAPSE_FLOOR * t_trace) & jnp.isfinite(t_trace)

    return GenerativeModel(init, fit, sample, evaluate, collapsed)


# ----------------------------------------------------------------------------------------------
# Exact fast path: a pool of sufficient statistics
