"""A location estimate refit on its own samples: the setting of Dey & Donoho's pi^2/6 law.

Real data: ``n0`` i.i.d. points of ``N(0, sigma^2 I_d)`` (source ``gaussian``). A fit is a
location estimate of the valid pool, coordinate-wise: its mean (option ``estimator='mean'``) or
its median (``'median'``). Sampling draws ``n`` points from ``N(theta, sigma^2 I_d)``: the spread
is known, only the location is refit, which is exactly the model of Dey & Donoho (the Gaussian
family refits the covariance too, so its mean error under accumulate is only close to their law).

Why a family of its own: under ``accumulate`` the variance of the estimate relative to
generation 0 follows ``sum_{j=1}^{g+1} 1/j^2 -> pi^2/6`` for the mean exactly (``n0 = n``), and
for the median in the large-n limit (their universality result); under ``replace`` it grows as
``g + 1`` (a random walk). ``theory.location_variance_ratio`` holds the accumulate law.

Metrics:
    error: ``|theta_g - mu|^2``, the squared distance of the estimate from the true location.

References:
    Dey & Donoho 2024, "Universality of the pi^2/6 Pathway in Avoiding Model Collapse",
    arXiv:2410.22812.
"""

from __future__ import annotations

import jax.numpy as jnp

from collapse_jax import rng
from collapse_jax.config import POSITIVE, StaticConfig
from collapse_jax.model import GenerativeModel, register_model


def masked_median(x: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
    """Coordinate-wise median of the valid rows of ``x`` ``[capacity, d]`` (``valid``
    ``[capacity]``): invalid rows sort last, and the middle one or two valid values are averaged.

    >>> import numpy as np
    >>> x = jnp.asarray(np.array([[3.0], [1.0], [9.0], [2.0]], np.float32))
    >>> float(masked_median(x, jnp.asarray([True, True, False, True]))[0])
    2.0
    """
    big = jnp.asarray(jnp.finfo(x.dtype).max, x.dtype)
    s = jnp.sort(jnp.where(valid[:, None], x, big), axis=0)
    count = jnp.sum(valid, dtype=jnp.int32)
    lo, hi = (count - 1) // 2, count // 2
    return (s[lo] + s[hi]) / 2


@register_model(
    "location",
    source="gaussian",
    hparams={"sigma": 1.0},
    options={"estimator": ("mean", "median")},
    ranges={"sigma": POSITIVE},
    metrics=("error",),
    float64=True,
    doc="location estimate (mean or median) refit on N(theta, sigma^2 I) samples (Dey & Donoho)",
    describe={
        "sigma": "standard deviation of the real data and of every sampled point (known)",
        "estimator": "the location estimate: pool mean or coordinate-wise pool median",
    },
)
def make_location(static: StaticConfig) -> GenerativeModel:
    """Location family for a StaticConfig (option ``estimator``)."""
    d, dt = static.d, jnp.dtype(static.dtype)
    median = static.option("estimator", "mean") == "median"

    def init(key, real, hparams):
        del key, real, hparams
        return {"theta": jnp.zeros((d,), dt)}

    def fit(key, pool, params, hparams):
        del key, params, hparams
        if median:
            return {"theta": masked_median(pool.data, pool.valid)}
        w = pool.valid.astype(dt)
        return {"theta": (w @ pool.data) / jnp.maximum(jnp.sum(w), 1.0)}

    def sample(key, params, real, hparams, num):
        del real
        return params["theta"][None, :] + hparams["sigma"] * rng.normal(key, (num, d), dt)

    def evaluate(params, real, hparams):
        del hparams
        return {"error": jnp.sum((params["theta"] - real.truth["mean"]) ** 2)}

    return GenerativeModel(init, fit, sample, evaluate)
