"""Linear regression refit on its own labels: the theory setting of Gerstgrasser et al. 2024.

Setup (THEORY.md): a design ``X`` ``[T, d]`` with N(0, I) rows is drawn once per chain and reused
by every generation; ``w* ~ N(0, I_d)``; real labels ``y = X w* + eps``, eps ~ N(0, sigma^2).
Each generation fits ordinary least squares on the (masked) pool; synthetic labels for the next
generation are ``X w_hat + fresh noise`` of the same sigma, so ``n == n0 == T``.

Metrics:
    test_error: |w_hat - w*|^2 (the expected squared error on test x ~ N(0, I)).
    test_mse: mean squared error of ``x w_hat`` on ``n_test`` held-out real (x, y) pairs.

Closed forms (``theory.py``): with u = sigma^2 d / (T - d - 1), replace gives u (g + 1) and
accumulate gives u * sum_{j<=g+1} 1/j^2 <= u pi^2 / 6.

References:
    Gerstgrasser et al. 2024, "Is Model Collapse Inevitable?", arXiv:2404.01413.
    Dohmatob, Feng, Kempe 2024, "Model Collapse Demystified: The Case of Regression".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from collapse_jax.config import ConfigError, StaticConfig
from collapse_jax.model import GenerativeModel, Source, register_model, register_source
from collapse_jax.types import RealData


@register_source("linear")
def linear_source(static: StaticConfig) -> Source:
    """Fixed Gaussian design, w* ~ N(0, I), labels with N(0, sigma^2) noise."""
    t, d, n_test = static.n0, static.d, static.n_test

    def draw(key, hparams, args):
        del args
        k_x, k_w, k_eps, k_xt, k_epst = jax.random.split(key, 5)
        sigma = hparams["sigma"]
        w = jax.random.normal(k_w, (d,), jnp.float32)
        x = jax.random.normal(k_x, (t, d), jnp.float32)
        y = x @ w + sigma * jax.random.normal(k_eps, (t,), jnp.float32)
        xt = jax.random.normal(k_xt, (n_test, d), jnp.float32)
        yt = xt @ w + sigma * jax.random.normal(k_epst, (n_test,), jnp.float32)
        return RealData({"x": x, "y": y}, {"x": xt, "y": yt}, {"w": w})

    return Source(lambda s: {}, draw)


def _check(static: StaticConfig) -> None:
    if static.n != static.n0:
        raise ConfigError(
            f"n={static.n}, n0={static.n0}: linear_regression relabels the fixed design, so n "
            f"must equal n0 (leave n0 unset)"
        )
    if static.n0 < static.d:
        raise ConfigError(
            f"n={static.n0} < d={static.d}: OLS needs at least d rows; use n >= d + 2 "
            f"(e.g. n={static.d + 2}) for the closed forms"
        )


@register_model(
    "linear_regression",
    source="linear",
    hparams={"sigma": 10.0},
    metrics=("test_error", "test_mse"),
    check=_check,
    doc="OLS on a fixed Gaussian design relabelled by the previous fit (Gerstgrasser et al.)",
    example={"n0": 12, "n": 12, "d": 3, "n_test": 16},
)
def make_linear_regression(static: StaticConfig) -> GenerativeModel:
    """Linear regression family for a StaticConfig (``n == n0 == T``)."""
    d = static.d

    def init(key, real, hparams):
        del key, real, hparams
        return {"w": jnp.zeros((d,), jnp.float32)}

    def fit(key, pool, params, hparams):
        del key, params, hparams
        x, y, w = pool.data["x"], pool.data["y"], pool.weights
        gram = (x * w[:, None]).T @ x
        rhs = (x * w[:, None]).T @ y
        return {"w": jax.scipy.linalg.solve(gram, rhs, assume_a="pos")}

    def sample(key, params, real, hparams, num):
        x = real.train["x"]
        noise = hparams["sigma"] * jax.random.normal(key, (num,), jnp.float32)
        return {"x": x, "y": x @ params["w"] + noise}

    def evaluate(params, real, hparams):
        del hparams
        w = params["w"]
        return {
            "test_error": jnp.sum((w - real.truth["w"]) ** 2),
            "test_mse": jnp.mean((real.test["x"] @ w - real.test["y"]) ** 2),
        }

    return GenerativeModel(init, fit, sample, evaluate)
