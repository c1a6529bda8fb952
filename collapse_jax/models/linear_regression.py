"""Linear regression refit on its own labels: the theory setting of Gerstgrasser et al. 2024.

Setup (docs/theory.md, section 1): a design ``X`` ``[T, d]`` with N(0, I) rows is drawn once per
chain and reused by every generation; ``w* ~ N(0, I_d)``; real labels ``y = X w* + eps``,
eps ~ N(0, sigma^2). Each generation fits ordinary least squares on the (masked) pool;
synthetic labels for the next generation are ``X w_hat + fresh noise`` of standard deviation
``noise_ratio * sigma`` (hyperparameter, default 1: the real labels' noise), so
``n == n0 == T``.

Metrics:
    test_error: |w_hat - w*|^2 (the expected squared error on test x ~ N(0, I)).
    test_mse: mean squared error of ``x w_hat`` on ``n_test`` held-out real (x, y) pairs.

The fit solves the normal equations through an eigendecomposition of the Gram matrix and keeps
only eigenvalues above ``eps * d * max``: the ordinary least-squares solution when the (masked)
design has rank d, the minimum-norm least-squares solution otherwise (e.g. a subsample that drew
fewer than d distinct rows). Flag ``collapsed``: the fit's design had rank < d (``params["rank"]``).

Exact fast path (option ``fast_path``, on by default, for ``replace`` and ``accumulate``): the fit
depends on its pool only through the Gram matrix ``X^T X`` and ``X^T y``, which add up over
blocks, so the pool is those sums (``pool.statistics_regime``) instead of the rows: the same
labels are drawn (same keys, same numbers), and each generation costs O(T d) for ``X^T y`` plus
the O(d^3) solve, where ``accumulate``'s pool of rows grows by T each generation (100,000 rows of
33 floats per chain after 100 generations at T = 1000). Same results as the row pool up to float
rounding (tests/models/test_linear_regression.py).

Closed forms (``theory.py``): with u = sigma^2 d / (T - d - 1), replace gives u (g + 1) and
accumulate gives u * sum_{j<=g+1} 1/j^2 <= u pi^2 / 6 (with ``noise_ratio`` r, the synthetic
rounds' terms are multiplied by r^2: u (1 + r^2 g) and u (1 + r^2 sum_{2<=j<=g+1} 1/j^2); Dohmatob
et al.'s general formula with sigma0 = r sigma, docs/theory.md section 1).

References:
    Gerstgrasser et al. 2024, "Is Model Collapse Inevitable?", arXiv:2404.01413.
    Dohmatob, Feng, Kempe 2024, "Model Collapse Demystified: The Case of Regression".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from collapse_jax import linalg as L
from collapse_jax import regimes as R
from collapse_jax import rng
from collapse_jax.config import NONNEGATIVE, ConfigError, StaticConfig
from collapse_jax.model import GenerativeModel, register_model


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
    hparams={"sigma": 10.0, "noise_ratio": 1.0},
    options={"fast_path": (True, False)},
    ranges={"sigma": NONNEGATIVE, "noise_ratio": NONNEGATIVE},
    metrics=("test_error", "test_mse"),
    check=_check,
    float64=True,
    doc="OLS on a fixed Gaussian design relabelled by the previous fit (Gerstgrasser et al.)",
    example={"n0": 12, "n": 12, "d": 3, "n_test": 16},
    describe={
        "sigma": "standard deviation of the real labels' noise",
        "noise_ratio": "synthetic labels' noise standard deviation / sigma (1: the same noise)",
        "fast_path": "replace / accumulate keep summed X^T X and X^T y instead of rows (exact)",
    },
)
def make_linear_regression(static: StaticConfig) -> GenerativeModel:
    """Linear regression family for a StaticConfig (``n == n0 == T``; option ``fast_path``)."""
    d, dt = static.d, jnp.dtype(static.dtype)
    fast = static.option("fast_path", True) and static.regime in FAST_REGIMES

    def init(key, real, hparams):
        del key, real, hparams
        return {"w": jnp.zeros((d,), dt), "rank": jnp.int32(d)}

    def solve(gram, rhs):
        evals, evecs = L.eigh(gram)
        keep = evals > jnp.finfo(dt).eps * d * jnp.max(evals)
        inv = jnp.where(keep, 1.0 / jnp.where(keep, evals, 1.0), 0.0)
        return {"w": evecs @ (inv * (evecs.T @ rhs)), "rank": jnp.sum(keep, dtype=jnp.int32)}

    def fit(key, pool, params, hparams):
        del key, params, hparams
        if fast:
            return solve(pool.data["gram"][0], pool.data["rhs"][0])
        x, y, w = pool.data["x"], pool.data["y"], pool.valid.astype(dt)
        return solve((x * w[:, None]).T @ x, (x * w[:, None]).T @ y)

    def sample(key, params, real, hparams, num):
        x = real.train["x"]  # fixed design: new labels of the real inputs
        noise = hparams["sigma"] * hparams["noise_ratio"]  # exactly sigma at the default 1
        y = x @ params["w"] + noise * rng.normal(key, (num,), dt)
        if fast:  # the block's statistics (X^T X is the same every generation)
            return _block(x, y, real.truth["gram"], real=False)
        return {"x": x, "y": y}

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

    regime = None
    if fast:
        regime = R.statistics_regime(
            static.regime, static.n, lambda rows: _block(rows["x"], rows["y"], None, real=True),
            lambda a, b: jax.tree.map(jnp.add, a, b))
    return GenerativeModel(init, fit, sample, evaluate, collapsed, regime=regime)


#: Regimes with an exact fast path over the summed statistics (option ``fast_path``).
FAST_REGIMES = ("replace", "accumulate")


def _block(x, y, gram, *, real: bool):
    """Statistics of the rows ``(x, y)`` as a one-slot block (``gram``: ``x^T x`` if known)."""
    count = jnp.full((1,), x.shape[0], x.dtype)
    return {"count": count, "real": count if real else jnp.zeros_like(count),
            "gram": (x.T @ x if gram is None else gram)[None], "rhs": (x.T @ y)[None]}

