"""Gaussian-kernel density estimate refit on its own samples (2-D toy data by default).

Fit: the KDE *is* the (weighted) pool, so the parameters are the pool points ``[P, d]``, their
weights ``[P]`` and the bandwidth ``h``. ``P`` is the static capacity of the pool a fit sees
(``Regime.fit_capacity``): the capacity, or the subsample size ``m`` under
``accumulate_subsample`` (its view gathers the ``m`` chosen rows, so the KDE of a subsample costs
``m``, not the capacity). Bandwidth: the hyperparameter ``h`` (option ``bandwidth="fixed"``), or
Scott's / Silverman's rule on the pool, ``h = c * n_eff^(-1/(d+4)) * sqrt(tr Cov / d)`` with
``c = 1`` (Scott) or ``(4 / (d + 2))^(1/(d+4))`` (Silverman), an isotropic kernel scaled by the
pool's pooled standard deviation (``n_eff`` is Kish's effective size, the count for unit weights).
Sampling: a pool point drawn with probability proportional to its weight plus
``N(0, scale * h^2 I)``; ``scale`` is the variance scale of biased sampling (1 = the KDE itself).

Held-out NLL: ``-mean_i log (sum_j w_j N(x_i; p_j, h^2 I) / sum_j w_j)`` by log-sum-exp over the
masked pool, computed in blocks of test points (``lax.map``) so the kernel matrix is never larger
than ``KERNEL_BLOCK`` entries per chain: a pool of 10^5 points needs no quadratic memory.

Exact incremental fast path (option ``fast_path``, on by default, for ``accumulate`` with
``bandwidth="fixed"``): ``kde_fast.py``. Scott's and Silverman's bandwidths change with the pool,
and the other regimes drop points: those use the full-pool path here. The sources (moons, circles,
swiss roll) are in ``data/toy2d.py``.

Metrics:
    nll: mean negative log-likelihood of the chain's held-out real points.
    bandwidth: the kernel bandwidth h of the fit.
    var_ratio: total variance of the KDE (pool covariance + h^2 I) over that of the test set.

Flag ``collapsed``: ``var_ratio <= COLLAPSE_FLOOR`` (1e-6, as the Gaussian's trace ratio): the
KDE has shrunk to (nearly) a point mass, its pool to one point and its bandwidth with it. Under
Scott's or Silverman's rule this is a pool of identical points (then ``h = MIN_BANDWIDTH``, the
floor that keeps the NLL finite); a fixed bandwidth keeps ``var_ratio >= d h^2 / tr Cov(test)``,
so a fixed-``h`` KDE on identical points is one Gaussian kernel, not collapsed.

References:
    Shumailov et al. 2024, "AI models collapse when trained on recursively generated data".
    Kazdan et al. 2024, "Collapse or Thrive?", arXiv:2410.16713 (KDE under replace/accumulate).
    Scott 1992, "Multivariate Density Estimation"; Silverman 1986, "Density Estimation".
    Chan, Golub, LeVeque 1979, "Updating formulae and a pairwise algorithm for computing sample
        variances".
"""


from __future__ import annotations

import jax.numpy as jnp

from collapse_jax.config import NONNEGATIVE, POSITIVE, ConfigError, StaticConfig
from collapse_jax.data.toy2d import TOY_SOURCES
from collapse_jax.model import GenerativeModel, register_model
from collapse_jax.models.kde_fast import FAST_REGIMES, make_fast
from collapse_jax.models.kde_kernels import (
    COLLAPSE_FLOOR,
    MIN_BANDWIDTH,
    held_out,
    kde_log_density,
    kernel_sample,
    rule_of_thumb,
)
from collapse_jax.pool import masked_cov, origin_weights, weighted_indices
from collapse_jax.regimes import make_regime


def _check(static: StaticConfig) -> None:
    source = static.source or "moons"
    if source in TOY_SOURCES and static.d != 2:
        raise ConfigError(f"d={static.d}: source {source!r} is 2-D; set d=2")



@register_model(
    "kde",
    source="moons",
    hparams={"h": 0.1, "scale": 1.0, "real_weight": 1.0, "noise": 0.05},
    ranges={"h": POSITIVE, "scale": NONNEGATIVE, "real_weight": NONNEGATIVE, "noise": NONNEGATIVE},
    options={"bandwidth": ("fixed", "scott", "silverman"), "fast_path": (True, False)},
    metrics=("nll", "bandwidth", "var_ratio"),
    check=_check,
    doc="Gaussian-kernel KDE on the pool (bandwidth fixed / Scott / Silverman), 2-D toy data; "
        "exact incremental fast path for accumulate with a fixed bandwidth",
    example={"n0": 16, "n": 16, "d": 2, "n_test": 16},
    describe={
        "h": "kernel bandwidth (option bandwidth='fixed')",
        "scale": "variance scale of the kernel when sampling (1 = the fitted KDE)",
        "real_weight": "weight of a real point in the fit relative to a synthetic one",
        "noise": "standard deviation of the toy sources' Gaussian noise",
        "bandwidth": "fixed (hparam h), or Scott's / Silverman's rule on the pool",
        "fast_path": "accumulate with a fixed bandwidth scores only the new points (exact)",
    },
)
def make_kde(static: StaticConfig) -> GenerativeModel:
    """KDE family for a StaticConfig (options ``bandwidth``, ``fast_path``).

    With ``fast_path`` (default), ``bandwidth="fixed"`` and regime ``accumulate`` the fit is
    incremental (``kde_fast.make_fast``); otherwise every evaluation scores the whole pool.
    """
    d = static.d
    rule = static.option("bandwidth", "fixed")
    if static.option("fast_path", True) and rule == "fixed" and static.regime in FAST_REGIMES:
        return make_fast(static)
    size = make_regime(static).fit_capacity

    def init(key, real, hparams):
        del key
        return {
            "points": jnp.zeros((size, d), jnp.float32),
            "weights": jnp.zeros((size,), jnp.float32),
            "h": jnp.asarray(hparams["h"], jnp.float32),
            **held_out(real),
        }

    def fit(key, pool, params, hparams):
        del key
        w = origin_weights(pool, hparams["real_weight"])
        points = pool.data
        if rule == "fixed":
            h = jnp.asarray(hparams["h"], jnp.float32)
        else:
            h = jnp.maximum(rule_of_thumb(points, w, rule), MIN_BANDWIDTH)
        return {**params, "points": points, "weights": w, "h": h}

    def sample(key, params, real, hparams, num):
        del real
        return kernel_sample(key, params["points"],
                              lambda u: weighted_indices(u, params["weights"]),
                              hparams["scale"], params["h"], num)

    def var_ratio(params):
        _, cov = masked_cov(params["points"], params["weights"])
        t_trace = params["test_trace"]
        return (jnp.trace(cov) + d * params["h"] ** 2) / t_trace, t_trace

    def evaluate(params, real, hparams):
        del real, hparams  # the held-out points are in params (see kde_kernels.held_out)
        points, w, h = params["points"], params["weights"], params["h"]
        return {
            "nll": -jnp.mean(kde_log_density(params["test"], points, w, h)),
            "bandwidth": h,
            "var_ratio": var_ratio(params)[0],
        }

    def collapsed(params, real, hparams):
        del real, hparams
        ratio, t_trace = var_ratio(params)
        return (ratio <= COLLAPSE_FLOOR) & jnp.isfinite(t_trace)

    return GenerativeModel(init, fit, sample, evaluate, collapsed)
