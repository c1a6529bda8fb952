"""Multivariate Gaussian refit on its own samples (Shumailov et al.; Kazdan et al.).

Real data: ``n0`` i.i.d. N(0, sigma^2 I_d). Fit: mean and MLE covariance (divide by the pool
size; option ``unbiased`` divides by size - 1). Sampling: ``mu + sqrt(scale) * L z`` with ``L`` the
symmetric (eigh) square root of the fitted covariance, so it works when the pool has n <= d points
and the covariance is singular. ``scale`` < 1 is the variance shrink of biased sampling (MAD's
lambda, Alemohammad et al.).

Metrics (generation g, against the true distribution):
    trace_ratio: tr(Sigma_g) / tr(Sigma_true).
    logdet_ratio: log det Sigma_g - log det Sigma_true (eigenvalues floored at float tiny).
    mean_error: |mu_g - mu_true|^2.
    w2: 2-Wasserstein distance from N(mu_g, Sigma_g) to the true distribution.
    nll: mean negative log-likelihood of held-out real points (relative ridge 1e-6).

References:
    Shumailov et al. 2024, "AI models collapse when trained on recursively generated data".
    Kazdan et al. 2024, "Collapse or Thrive?", arXiv:2410.16713.
    Alemohammad et al. 2023, "Self-Consuming Generative Models Go MAD", arXiv:2307.01850.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from collapse_jax import metrics as M
from collapse_jax.config import StaticConfig
from collapse_jax.model import GenerativeModel, Source, register_model, register_source
from collapse_jax.pool import masked_cov
from collapse_jax.types import RealData


@register_source("gaussian")
def gaussian_source(static: StaticConfig) -> Source:
    """N(0, sigma^2 I_d): ``n0`` training and ``n_test`` held-out points per chain."""
    n0, n_test, d = static.n0, static.n_test, static.d

    def draw(key, hparams, args):
        del args
        k_train, k_test = jax.random.split(key)
        sigma = hparams["sigma"]
        train = sigma * jax.random.normal(k_train, (n0, d), jnp.float32)
        test = sigma * jax.random.normal(k_test, (n_test, d), jnp.float32)
        truth = {
            "mean": jnp.zeros((d,), jnp.float32),
            "cov": (sigma**2) * jnp.eye(d, dtype=jnp.float32),
        }
        return RealData(train, test, truth)

    def fresh(key, hparams, args, real, num):
        del args, real
        return hparams["sigma"] * jax.random.normal(key, (num, d), jnp.float32)

    return Source(lambda s: {}, draw, fresh)


@register_model(
    "gaussian",
    source="gaussian",
    hparams={"sigma": 1.0, "scale": 1.0},
    options={"unbiased": (False, True)},
    metrics=("trace_ratio", "logdet_ratio", "mean_error", "w2", "nll"),
    doc="multivariate Gaussian: mean + covariance (MLE or unbiased), eigh-sqrt sampling",
)
def make_gaussian(static: StaticConfig) -> GenerativeModel:
    """Gaussian family for a StaticConfig (options: ``unbiased``)."""
    d = static.d
    ddof = 1 if static.option("unbiased", False) else 0

    def init(key, real, hparams):
        del key, real, hparams
        return {"mean": jnp.zeros((d,), jnp.float32), "cov": jnp.eye(d, dtype=jnp.float32)}

    def fit(key, pool, params, hparams):
        del key, params, hparams
        mean, cov = masked_cov(pool.data, pool.weights, ddof=ddof)
        return {"mean": mean, "cov": cov}

    def sample(key, params, real, hparams, num):
        del real
        z = jax.random.normal(key, (num, d), jnp.float32)
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
            "nll": M.gaussian_nll(real.test, mean, cov),
        }

    return GenerativeModel(init, fit, sample, evaluate)
