"""Linear regression refit on its own labels: the theory setting of Gerstgrasser et al. 2024.

Setup (THEORY.md): a design ``X`` ``[T, d]`` with N(0, I) rows is drawn once per chain and reused
by every generation; ``w* ~ N(0, I_d)``; real labels ``y = X w* + eps``, eps ~ N(0, sigma^2).
Each generation fits ordinary least squares on the (masked) pool; synthetic labels for the next
generation are ``X w_hat + fresh noise`` of the same sigma, so ``n == n0 == T``.

Metrics:
    test_error: |w_hat - w*|^2 (the expected squared error on test x ~ N(0, I)).
    test_mse: mean squared error of ``x w_hat`` on ``n_test`` held-out real (x, y) pairs.

The fit solves the normal equations through an eigendecomposition of the Gram matrix and keeps
only eigenvalues above ``eps * d * max``: the ordinary least-squares solution when the (masked)
design has rank d, the minimum-norm least-squares solution otherwise (e.g. a subsample that drew
fewer than d distinct rows). Flag ``collapsed``: the fit's design had rank < d (``params["rank"]``).

Closed forms (``theory.py``): with u = sigma^2 d / (T - d - 1), replace gives u (g + 1) and
accumulate gives u * sum_{j<=g+1} 1/j^2 <= u pi^2 / 6.

References:
    Gerstgrasser et al. 2024, "Is Model Collapse Inevitable?", arXiv:2404.01413.
    Dohmatob, Feng, Kempe 2024, "Model Collapse Demystified: The Case of Regression".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from collapse_jax import linalg as L
from collapse_jax.config import NONNEGATIVE, ConfigError, StaticConfig, declare_float64
from collapse_jax.model import GenerativeModel, Source, register_model, register_source
from collapse_jax.types import RealData


@register_source("linear")
def linear_source(static: StaticConfig) -> Source:
    """Fixed Gaussian design, w* ~ N(0, I), labels with N(0, sigma^2) noise."""
    t, d, n_test, dt = static.n0, static.d, static.n_test, jnp.dtype(static.dtype)

    def draw(key, hparams, args):
        del args
        k_x, k_w, k_eps, k_xt, k_epst = jax.random.split(key, 5)
        sigma = hparams["sigma"]
        w = jax.random.normal(k_w, (d,), dt)
        x = jax.random.normal(k_x, (t, d), dt)
        y = x @ w + sigma * jax.random.normal(k_eps, (t,), dt)
        xt = jax.random.normal(k_xt, (n_test, d), dt)
        yt = xt @ w + sigma * jax.random.normal(k_epst, (n_test,), dt)
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
            f"n={static.n0}, d={static.d}: linear_regression needs n >= d design rows (OLS with "
            f"fewer rows than unknowns is not identified); use n >= {static.d}, or "
            f"n >= {static.d + 2} for the closed forms"
        )
    if static.regime == "accumulate_subsample" and (static.subsample or static.n0) < static.d:
        raise ConfigError(
            f"subsample={static.subsample}, d={static.d}: each fit needs at least d rows; "
            f"use subsample >= {static.d}"
        )


@register_model(
    "linear_regression",
    source="linear",
    hparams={"sigma": 10.0},
    ranges={"sigma": NONNEGATIVE},
    metrics=("test_error", "test_mse"),
    check=_check,
    doc="OLS on a fixed Gaussian design relabelled by the previous fit (Gerstgrasser et al.)",
    example={"n0": 12, "n": 12, "d": 3, "n_test": 16},
)
def make_linear_regression(static: StaticConfig) -> GenerativeModel:
    """Linear regression family for a StaticConfig (``n == n0 == T``)."""
    d, dt = static.d, jnp.dtype(static.dtype)

    def init(key, real, hparams):
        del key, real, hparams
        return {"w": jnp.zeros((d,), dt), "rank": jnp.int32(d)}

    def fit(key, pool, params, hparams):
        del key, params, hparams
        x, y, w = pool.data["x"], pool.data["y"], pool.valid.astype(dt)
        gram = (x * w[:, None]).T @ x
        rhs = (x * w[:, None]).T @ y
        evals, evecs = L.eigh(gram)
        keep = evals > jnp.finfo(dt).eps * d * jnp.max(evals)
        inv = jnp.where(keep, 1.0 / jnp.where(keep, evals, 1.0), 0.0)
        return {"w": evecs @ (inv * (evecs.T @ rhs)), "rank": jnp.sum(keep, dtype=jnp.int32)}

    def sample(key, params, real, hparams, num):
        x = real.train["x"]
        noise = hparams["sigma"] * jax.random.normal(key, (num,), dt)
        return {"x": x, "y": x @ params["w"] + noise}

    def evaluate(params, real, hparams):
        del hparams
        w = params["w"]
        return {
            "test_error": jnp.sum((w - real.truth["w"]) ** 2),
            "test_mse": jnp.mean((real.test["x"] @ w - real.test["y"]) ** 2),
        }

    def collapsed(params, real, hparams):
        del real, hparams
        return params["rank"] < d

    return GenerativeModel(init, fit, sample, evaluate, collapsed)


declare_float64("linear_regression")  # computes in static.dtype throughout
