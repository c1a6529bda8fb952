"""Gaussian-kernel density estimate refit on its own samples; 2-D toy sources (moons, circles,
swiss roll).

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

Sources (i.i.d. versions of scikit-learn's ``make_moons``, ``make_circles(factor=0.8)`` and
``make_swiss_roll`` (x, z coordinates), generated in JAX inside ``draw``, with Gaussian noise of
standard deviation ``noise``): scikit-learn places points at evenly spaced angles with exactly
half per component; here the angle is uniform and the component a fair coin, so training, test
and fresh data are i.i.d. draws from one distribution.

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
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from collapse_jax.config import NONNEGATIVE, POSITIVE, ConfigError, StaticConfig
from collapse_jax.model import GenerativeModel, Source, register_model, register_source
from collapse_jax.pool import make_regime, masked_cov, origin_weights
from collapse_jax.pool import sample_weighted_indices as _sample_idx
from collapse_jax.types import RealData

#: Entries of the [test block, pool] kernel matrix computed at once per chain.
KERNEL_BLOCK = 2**18

TOY_SOURCES = ("moons", "circles", "swiss_roll")
CIRCLES_FACTOR = 0.8


def toy_points(name: str, key, num: int, noise) -> Float[Array, "num 2"]:
    """``num`` i.i.d. points of a 2-D toy distribution (see module docstring), float32."""
    k_c, k_t, k_e = jax.random.split(key, 3)
    u = jax.random.uniform(k_t, (num,), jnp.float32)
    eps = jnp.asarray(noise, jnp.float32) * jax.random.normal(k_e, (num, 2), jnp.float32)
    if name == "moons":
        inner = jax.random.bernoulli(k_c, 0.5, (num,))
        t = jnp.pi * u
        x = jnp.where(inner, 1.0 - jnp.cos(t), jnp.cos(t))
        y = jnp.where(inner, 1.0 - jnp.sin(t) - 0.5, jnp.sin(t))
    elif name == "circles":
        inner = jax.random.bernoulli(k_c, 0.5, (num,))
        t = 2.0 * jnp.pi * u
        r = jnp.where(inner, jnp.float32(CIRCLES_FACTOR), jnp.float32(1.0))
        x, y = r * jnp.cos(t), r * jnp.sin(t)
    elif name == "swiss_roll":
        del k_c
        t = 1.5 * jnp.pi * (1.0 + 2.0 * u)
        x, y = t * jnp.cos(t), t * jnp.sin(t)
    else:
        raise ValueError(f"unknown toy source {name!r}; allowed: {TOY_SOURCES}")
    return jnp.stack([x, y], axis=1) + eps


def _toy_source(name: str):
    def factory(static: StaticConfig) -> Source:
        n0, n_test = static.n0, static.n_test

        def draw(key, hparams, args):
            del args
            k_train, k_test = jax.random.split(key)
            noise = hparams["noise"]
            train = toy_points(name, k_train, n0, noise)
            test = toy_points(name, k_test, n_test, noise)
            return RealData(train, test, {})

        def fresh(key, hparams, args, real, num):
            del args, real
            return toy_points(name, key, num, hparams["noise"])

        return Source(lambda s: {}, draw, fresh)

    factory.__doc__ = f"2-D {name} (hparam ``noise``): n0 train and n_test held-out points."
    return register_source(name)(factory)


moons_source = _toy_source("moons")
circles_source = _toy_source("circles")
swiss_roll_source = _toy_source("swiss_roll")


def kde_log_density(
    x: Float[Array, "m d"], points: Float[Array, "P d"], w: Float[Array, " P"], h,
    block: int | None = None,
) -> Float[Array, " m"]:
    """log of the weighted Gaussian KDE at each row of ``x``, in blocks of test rows.

    ``log sum_j (w_j / sum w) N(x; p_j, h^2 I)``; zero-weight points do not count. ``block`` test
    rows are processed at once (default: ``KERNEL_BLOCK // P``), so memory is ``O(block * P)``.

    >>> import jax.numpy as jnp
    >>> v = kde_log_density(jnp.zeros((1, 1)), jnp.array([[0.], [5.]]), jnp.array([1., 0.]), 1.)
    >>> round(float(v[0]), 6)  # log N(0; 0, 1)
    -0.918939
    """
    m, d = x.shape
    p = points.shape[0]
    block = block or max(1, min(m, KERNEL_BLOCK // max(p, 1)))
    nb = -(-m // block)
    xp = jnp.concatenate([x, jnp.zeros((nb * block - m, d), x.dtype)]).reshape(nb, block, d)
    h = jnp.asarray(h, x.dtype)
    logw = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf) - jnp.log(jnp.sum(w))

    def one(xb):
        d2 = jnp.sum((xb[:, None, :] - points[None, :, :]) ** 2, axis=-1)
        return jax.nn.logsumexp(-d2 / (2.0 * h**2) + logw[None, :], axis=1)

    out = jax.lax.map(one, xp).reshape(-1)[:m]
    return out - 0.5 * d * jnp.log(2.0 * jnp.pi * h**2)


def rule_of_thumb(
    points: Float[Array, "P d"], w: Float[Array, " P"], rule: str
) -> Float[Array, ""]:
    """Scott / Silverman bandwidth of a weighted point set (isotropic, pooled std)."""
    d = points.shape[1]
    _, cov = masked_cov(points, w)
    sd = jnp.sqrt(jnp.maximum(jnp.trace(cov) / d, 0.0))
    n_eff = jnp.sum(w) ** 2 / jnp.maximum(jnp.sum(w**2), jnp.finfo(w.dtype).tiny)
    c = 1.0 if rule == "scott" else (4.0 / (d + 2.0)) ** (1.0 / (d + 4.0))
    return c * n_eff ** (-1.0 / (d + 4.0)) * sd


#: Smallest bandwidth a rule of thumb may return (a collapsed pool has zero spread).
MIN_BANDWIDTH = 1e-6
#: ``var_ratio`` at or below which a chain counts as collapsed (see the module docstring).
COLLAPSE_FLOOR = 1e-6


def _check(static: StaticConfig) -> None:
    source = static.source or "moons"
    if source in TOY_SOURCES and static.d != 2:
        raise ConfigError(f"d={static.d}: source {source!r} is 2-D; set d=2")


@register_model(
    "kde",
    source="moons",
    hparams={"h": 0.1, "scale": 1.0, "real_weight": 1.0, "noise": 0.05},
    ranges={"h": POSITIVE, "scale": NONNEGATIVE, "real_weight": NONNEGATIVE, "noise": NONNEGATIVE},
    options={"bandwidth": ("fixed", "scott", "silverman")},
    metrics=("nll", "bandwidth", "var_ratio"),
    check=_check,
    doc="Gaussian-kernel KDE on the pool (bandwidth fixed / Scott / Silverman), 2-D toy data",
    example={"n0": 16, "n": 16, "d": 2, "n_test": 16},
)
def make_kde(static: StaticConfig) -> GenerativeModel:
    """KDE family for a StaticConfig (option ``bandwidth``)."""
    d = static.d
    size = make_regime(static).fit_capacity
    rule = static.option("bandwidth", "fixed")

    def init(key, real, hparams):
        del key, real
        return {
            "points": jnp.zeros((size, d), jnp.float32),
            "weights": jnp.zeros((size,), jnp.float32),
            "h": jnp.asarray(hparams["h"], jnp.float32),
        }

    def fit(key, pool, params, hparams):
        del key, params
        w = origin_weights(pool, hparams["real_weight"])
        points = pool.data
        if rule == "fixed":
            h = jnp.asarray(hparams["h"], jnp.float32)
        else:
            h = jnp.maximum(rule_of_thumb(points, w, rule), MIN_BANDWIDTH)
        return {"points": points, "weights": w, "h": h}

    def sample(key, params, real, hparams, num):
        del real
        k_idx, k_eps = jax.random.split(key)
        idx = _sample_idx(k_idx, params["weights"], num)
        eps = jax.random.normal(k_eps, (num, d), jnp.float32)
        return params["points"][idx] + (jnp.sqrt(hparams["scale"]) * params["h"]) * eps

    def var_ratio(params, real):
        _, cov = masked_cov(params["points"], params["weights"])
        _, t_cov = masked_cov(real.test, jnp.ones(real.test.shape[:1], jnp.float32))
        t_trace = jnp.trace(t_cov)
        return (jnp.trace(cov) + d * params["h"] ** 2) / t_trace, t_trace

    def evaluate(params, real, hparams):
        del hparams
        points, w, h = params["points"], params["weights"], params["h"]
        return {
            "nll": -jnp.mean(kde_log_density(real.test, points, w, h)),
            "bandwidth": h,
            "var_ratio": var_ratio(params, real)[0],
        }

    def collapsed(params, real, hparams):
        del hparams
        ratio, t_trace = var_ratio(params, real)
        return (ratio <= COLLAPSE_FLOOR) & jnp.isfinite(t_trace)

    return GenerativeModel(init, fit, sample, evaluate, collapsed)

