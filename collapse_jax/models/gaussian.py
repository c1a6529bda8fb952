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

Flag ``collapsed``: tr(Sigma_g) <= ``COLLAPSE_FLOOR`` * tr(Sigma_true) (covariance of rank 0 up to
rounding: the chain now samples one point over and over).

References:
    Shumailov et al. 2024, "AI models collapse when trained on recursively generated data".
    Kazdan et al. 2024, "Collapse or Thrive?", arXiv:2410.16713.
    Alemohammad et al. 2023, "Self-Consuming Generative Models Go MAD", arXiv:2307.01850.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from collapse_jax import metrics as M
from collapse_jax.config import (
    NONNEGATIVE,
    POSITIVE,
    ConfigError,
    StaticConfig,
    declare_float64,
)
from collapse_jax.model import GenerativeModel, Source, register_model, register_source
from collapse_jax.pool import masked_cov
from collapse_jax.types import RealData

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
        truth = {
            "mean": jnp.zeros((d,), dt),
            "cov": (sigma**2) * jnp.eye(d, dtype=dt),
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
    options={"unbiased": (False, True)},
    ranges={"sigma": POSITIVE, "scale": NONNEGATIVE},
    metrics=("trace_ratio", "logdet_ratio", "mean_error", "w2", "nll"),
    check=_check,
    doc="multivariate Gaussian: mean + covariance (MLE or unbiased), eigh-sqrt sampling",
)
def make_gaussian(static: StaticConfig) -> GenerativeModel:
    """Gaussian family for a StaticConfig (options: ``unbiased``)."""
    d, dt = static.d, jnp.dtype(static.dtype)
    ddof = 1 if static.option("unbiased", False) else 0

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


declare_float64("gaussian")  # computes in static.dtype throughout
