"""Generated real data of the classical families: Gaussian, linear regression, categorical and
Gaussian-mixture sources, drawn in JAX inside ``draw`` (one chain's data from its key).

References:
    Gerstgrasser et al. 2024, "Is Model Collapse Inevitable?", arXiv:2404.01413 (fixed design).
    Shumailov et al. 2024, "AI models collapse when trained on recursively generated data".
    Kazdan et al. 2024, "Collapse or Thrive?", arXiv:2410.16713.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from collapse_jax import rng
from collapse_jax.config import StaticConfig
from collapse_jax.model import Source, register_source
from collapse_jax.types import RealData


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


@register_source("linear")
def linear_source(static: StaticConfig) -> Source:
    """Fixed Gaussian design, w* ~ N(0, I), labels with N(0, sigma^2) noise.

    All of a chain's normals (design, weights, noise, held-out set) come from one draw, split
    by position: one random-number call compiles far faster than five (a threefry call is a
    block of code of its own for XLA).
    """
    t, d, n_test, dt = static.n0, static.d, static.n_test, jnp.dtype(static.dtype)
    sizes = (t * d, d, t, n_test * d, n_test)

    def draw(key, hparams, args):
        del args
        z = rng.normal(key, (sum(sizes),), dt)
        x, w, eps, xt, eps_t = jnp.split(z, np.cumsum(sizes)[:-1])
        x, xt = x.reshape(t, d), xt.reshape(n_test, d)
        sigma = hparams["sigma"]
        y, yt = x @ w + sigma * eps, xt @ w + sigma * eps_t
        return RealData({"x": x, "y": y}, {"x": xt, "y": yt}, {"w": w, "gram": x.T @ x})

    return Source(lambda s: {}, draw)


PRIORS = ("uniform", "zipf", "dirichlet")


def true_probabilities(prior: str, k: int, alpha) -> jax.Array:
    """The static true p of ``uniform`` / ``zipf`` priors, ``[k]`` float32."""
    if prior == "uniform":
        return jnp.full((k,), 1.0 / k, jnp.float32)
    if prior == "zipf":
        w = jnp.arange(1, k + 1, dtype=jnp.float32) ** (-jnp.asarray(alpha, jnp.float32))
        return w / jnp.sum(w)
    raise ValueError(f"prior={prior!r} has no static p")


@register_source("categorical")
def categorical_source(static: StaticConfig) -> Source:
    """``n0`` training and ``n_test`` held-out outcome indices from the true p of one chain."""
    k, n0, n_test = static.d, static.n0, static.n_test
    prior = static.option("prior", "uniform")

    def truth_p(key, hparams):
        if prior == "dirichlet":
            alpha = hparams["alpha"] * jnp.ones((k,), jnp.float32)
            p = jax.random.dirichlet(key, alpha, dtype=jnp.float32)
            return p / jnp.sum(p)
        del key
        return true_probabilities(prior, k, hparams["alpha"])

    def draw(key, hparams, args):
        del args
        k_p, k_train, k_test = jax.random.split(key, 3)
        p = truth_p(k_p, hparams)
        logits = jnp.log(p)
        train = jax.random.categorical(k_train, logits, shape=(n0,)).astype(jnp.int32)
        test = jax.random.categorical(k_test, logits, shape=(n_test,)).astype(jnp.int32)
        return RealData(train, test, {"p": p})

    def fresh(key, hparams, args, real, num):
        del hparams, args
        return jax.random.categorical(key, jnp.log(real.truth["p"]), shape=(num,)).astype(
            jnp.int32
        )

    return Source(lambda s: {}, draw, fresh)


def true_means(k: int, d: int, radius) -> Float[Array, "k d"]:
    """Means of the ``mixture`` source: a circle in the first two coordinates (segment for d=1)."""
    radius = jnp.asarray(radius, jnp.float32)
    if d == 1:
        return (radius * jnp.linspace(-1.0, 1.0, k, dtype=jnp.float32))[:, None]
    t = 2.0 * jnp.pi * jnp.arange(k, dtype=jnp.float32) / k
    circle = radius * jnp.stack([jnp.cos(t), jnp.sin(t)], axis=1)
    return jnp.concatenate([circle, jnp.zeros((k, d - 2), jnp.float32)], axis=1)


@register_source("mixture")
def mixture_source(static: StaticConfig) -> Source:
    """K equal-weight components N(mu_k, sigma^2 I) (K = option ``components``)."""
    k, d, n0, n_test = static.option("components", 3), static.d, static.n0, static.n_test

    def points(key, hparams, num):
        k_c, k_z = jax.random.split(key)
        means = true_means(k, d, hparams["radius"])
        c = jax.random.randint(k_c, (num,), 0, k, dtype=jnp.int32)
        return means[c] + hparams["sigma"] * jax.random.normal(k_z, (num, d), jnp.float32)

    def draw(key, hparams, args):
        del args
        k_train, k_test = jax.random.split(key)
        truth = {"means": true_means(k, d, hparams["radius"])}
        return RealData(points(k_train, hparams, n0), points(k_test, hparams, n_test), truth)

    def fresh(key, hparams, args, real, num):
        del args, real
        return points(key, hparams, num)

    return Source(lambda s: {}, draw, fresh)
