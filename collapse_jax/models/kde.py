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

Exact incremental fast path (option ``fast_path``, on by default, for ``accumulate`` with
``bandwidth="fixed"``): the pool only gains points and, with a fixed ``h``, a kernel value once
computed never changes. So the fit carries, per held-out point, the running log-sum of the
kernels of the real slots and, apart, of the synthetic slots (both unweighted: ``real_weight``
enters at evaluation, ``log(rw e^{L_real} + e^{L_synth}) - log(rw n0 + n_synth)``), and folds in
only the block of ``n`` slots the last generation appended: O(n_test n) kernel evaluations per
generation instead of O(n_test capacity). ``var_ratio`` comes from running moments (Chan et al.'s
merge), sampling from a closed-form inverse CDF over the valid prefix (O(n), no pass over the
capacity). The metrics equal the full-pool path's to float32 rounding on the same chain
(tests/test_kde_fast_path.py). Scott's and Silverman's bandwidths change with the pool, and the
other regimes drop points: those use the full-pool path.

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
    Chan, Golub, LeVeque 1979, "Updating formulae and a pairwise algorithm for computing sample
        variances".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from collapse_jax.config import NONNEGATIVE, POSITIVE, ConfigError, StaticConfig
from collapse_jax.model import GenerativeModel, Source, register_model, register_source
from collapse_jax.pool import (
    make_regime,
    masked_cov,
    origin_weights,
    safe_reciprocal,
    weighted_indices,
)
from collapse_jax.types import RealData

#: Entries of the [test block, pool] kernel matrix computed at once per chain.
KERNEL_BLOCK = 2**18

TOY_SOURCES = ("moons", "circles", "swiss_roll")
CIRCLES_FACTOR = 0.8


def toy_points(name: str, key, num: int, noise) -> Float[Array, "num 2"]:
    """``num`` i.i.d. points of a 2-D toy distribution (see module docstring), float32.

    All the randomness comes from one uniform draw ``[4, num]``: the component (a fair coin),
    the position along the curve, and two uniforms turned into the Gaussian noise (``normals``,
    Box-Muller). One random-number call instead of four (coin, angle, normals and the key split)
    keeps the compiled chain programs small: each threefry call is a separate block of code for
    XLA to compile, about 0.2 s each on 2 CPU cores.

    Args:
        name: one of ``TOY_SOURCES``.
        key: PRNG key.
        num: static number of points.
        noise: float32 scalar, standard deviation of the isotropic Gaussian noise.

    Returns:
        ``[num, 2]`` float32 points.

    >>> import jax
    >>> x = toy_points("circles", jax.random.key(0), 5, 0.0)
    >>> x.shape, sorted({round(float(r), 4) for r in (x ** 2).sum(1) ** 0.5})
    ((5, 2), [0.8, 1.0])

    References:
        Box & Muller 1958, "A note on the generation of random normal deviates", Ann. Math.
            Statist. 29(2), 610-611.
    """
    u = jax.random.uniform(key, (4, num), jnp.float32)
    inner, t01 = u[0] < 0.5, u[1]
    eps = jnp.asarray(noise, jnp.float32) * normals(u[2:], 2)
    if name == "moons":
        t = jnp.pi * t01
        x = jnp.where(inner, 1.0 - jnp.cos(t), jnp.cos(t))
        y = jnp.where(inner, 1.0 - jnp.sin(t) - 0.5, jnp.sin(t))
    elif name == "circles":
        t = 2.0 * jnp.pi * t01
        r = jnp.where(inner, jnp.float32(CIRCLES_FACTOR), jnp.float32(1.0))
        x, y = r * jnp.cos(t), r * jnp.sin(t)
    elif name == "swiss_roll":
        t = 1.5 * jnp.pi * (1.0 + 2.0 * t01)
        x, y = t * jnp.cos(t), t * jnp.sin(t)
    else:
        raise ValueError(f"unknown toy source {name!r}; allowed: {TOY_SOURCES}")
    return jnp.stack([x, y], axis=1) + eps


def _toy_source(name: str):
    def factory(static: StaticConfig) -> Source:
        n0, n_test = static.n0, static.n_test

        def draw(key, hparams, args):
            # train and test from one draw (one random-number call, see toy_points)
            del args
            points = toy_points(name, key, n0 + n_test, hparams["noise"])
            return RealData(points[:n0], points[n0:], {})

        def fresh(key, hparams, args, real, num):
            del args, real
            return toy_points(name, key, num, hparams["noise"])

        return Source(lambda s: {}, draw, fresh)

    factory.__doc__ = f"2-D {name} (hparam ``noise``): n0 train and n_test held-out points."
    return register_source(name)(factory)


moons_source = _toy_source("moons")
circles_source = _toy_source("circles")
swiss_roll_source = _toy_source("swiss_roll")


def log_kernel_sum(
    x: Float[Array, "m d"], points: Float[Array, "P d"], logw: Float[Array, " P"], h,
    block: int | None = None,
) -> Float[Array, " m"]:
    """``log sum_j exp(logw_j - |x_i - p_j|^2 / (2 h^2))`` for each row ``x_i``, in blocks.

    The unnormalised log of a weighted Gaussian kernel sum (no ``1 / sum w``, no
    ``(2 pi h^2)^(-d/2)``); points with ``logw = -inf`` do not count, and a row with no counting
    point gives ``-inf``. ``block`` rows of ``x`` are processed at once (default:
    ``KERNEL_BLOCK // P``), so memory is ``O(block * P)``.

    Args:
        x: ``[m, d]`` query rows.
        points: ``[P, d]`` kernel centres.
        logw: ``[P]`` log weights (``-inf`` for points that do not count).
        h: scalar bandwidth.
        block: rows of ``x`` per kernel block (static).

    Returns:
        ``[m]`` log kernel sums.

    >>> import jax.numpy as jnp
    >>> v = log_kernel_sum(jnp.zeros((1, 1)), jnp.array([[0.], [2.]]), jnp.zeros(2), 1.)
    >>> round(float(v[0]), 6)  # log(1 + exp(-2))
    0.126928

    References:
        Silverman 1986, "Density Estimation for Statistics and Data Analysis".
    """
    m, d = x.shape
    p = points.shape[0]
    block = block or max(1, min(m, KERNEL_BLOCK // max(p, 1)))
    nb = -(-m // block)
    h = jnp.asarray(h, x.dtype)
    cols = points.T  # [d, P]: each coordinate contiguous along the points

    def one(xb):
        # squared distances summed coordinate by coordinate (d is small): [block, P] arrays
        # with P minor vectorise well, where a [block, P, d] difference reduced over its minor
        # axis of size d does not (5x slower on XLA CPU for d = 2); same sum order as jnp.sum
        d2 = (xb[:, 0:1] - cols[0][None, :]) ** 2
        for k in range(1, d):
            d2 = d2 + (xb[:, k : k + 1] - cols[k][None, :]) ** 2
        return jax.nn.logsumexp(-d2 / (2.0 * h**2) + logw[None, :], axis=1)

    if nb == 1:  # one block: no loop
        return one(x)
    xp = jnp.concatenate([x, jnp.zeros((nb * block - m, d), x.dtype)]).reshape(nb, block, d)
    return jax.lax.map(one, xp).reshape(-1)[:m]


def _log_weights(w: Float[Array, " P"]) -> Float[Array, " P"]:
    """``log w``, ``-inf`` where ``w <= 0``."""
    return jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)


def _log_norm(d: int, h) -> Array:
    """``log (2 pi h^2)^(-d/2)``, the Gaussian kernel's normaliser."""
    return -0.5 * d * jnp.log(2.0 * jnp.pi * h**2)


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
    h = jnp.asarray(h, x.dtype)
    logw = _log_weights(w) - jnp.log(jnp.sum(w))
    return log_kernel_sum(x, points, logw, h, block) + _log_norm(x.shape[1], h)


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


def _held_out(real: RealData) -> dict[str, Array]:
    """The held-out points and their total variance (the ``var_ratio`` denominator).

    Both families of parameters carry them (``init`` receives ``real``): ``evaluate`` reads the
    held-out points from the parameters, so the compiled generation loop needs no re-draw of the
    chain's real data (the source's random numbers and curves are compiled once, into ``init``).
    """
    _, t_cov = masked_cov(real.test, jnp.ones(real.test.shape[:1], jnp.float32))
    return {"test": real.test, "test_trace": jnp.trace(t_cov)}


def normals(u: Float[Array, "k num"], d: int) -> Float[Array, "num d"]:
    """``[num, d]`` independent standard normals from uniforms in ``[0, 1)`` (Box-Muller).

    Rows ``2i, 2i + 1`` of ``u`` give normals ``2i, 2i + 1``: ``r = sqrt(-2 log(1 - u_2i))``,
    ``(r cos 2 pi u_2i+1, r sin 2 pi u_2i+1)``; ``u`` needs ``2 ceil(d / 2)`` rows. float32
    uniforms (``1 - u >= 2^-23``) cap ``|z|`` at 5.65; ``jax.random.normal``'s cap is about 5.4.

    >>> import jax.numpy as jnp
    >>> z = normals(jnp.array([[0.5], [0.0]]), 2)  # r = sqrt(2 log 2), angle 0
    >>> [round(float(v), 5) for v in z[0]]
    [1.17741, 0.0]

    References:
        Box & Muller 1958, "A note on the generation of random normal deviates", Ann. Math.
            Statist. 29(2), 610-611.
    """
    pairs = -(-d // 2)
    radius = jnp.sqrt(-2.0 * jnp.log1p(-u[0 : 2 * pairs : 2]))  # [pairs, num]
    theta = (2.0 * jnp.pi) * u[1 : 2 * pairs : 2]
    z = jnp.stack([radius * jnp.cos(theta), radius * jnp.sin(theta)], axis=1)  # [pairs, 2, num]
    return z.reshape(2 * pairs, -1)[:d].T


def _kernel_sample(key, points, idx_fn, scale, h, num):
    """``num`` KDE samples: one uniform draw gives the pool indices (``idx_fn`` of its first row)
    and the kernel noise (Box-Muller on the others): one random-number call per generation."""
    d = points.shape[1]
    u = jax.random.uniform(key, (1 + 2 * (-(-d // 2)), num), jnp.float32)
    eps = normals(u[1:], d)
    return points[idx_fn(u[0])] + (jnp.sqrt(scale) * h) * eps


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
)
def make_kde(static: StaticConfig) -> GenerativeModel:
    """KDE family for a StaticConfig (options ``bandwidth``, ``fast_path``).

    With ``fast_path`` (default), ``bandwidth="fixed"`` and regime ``accumulate`` the fit is
    incremental (``_make_fast``); otherwise every evaluation scores the whole pool.
    """
    d = static.d
    rule = static.option("bandwidth", "fixed")
    if static.option("fast_path", True) and rule == "fixed" and static.regime in FAST_REGIMES:
        return _make_fast(static)
    size = make_regime(static).fit_capacity

    def init(key, real, hparams):
        del key
        return {
            "points": jnp.zeros((size, d), jnp.float32),
            "weights": jnp.zeros((size,), jnp.float32),
            "h": jnp.asarray(hparams["h"], jnp.float32),
            **_held_out(real),
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
        return _kernel_sample(key, params["points"],
                              lambda u: weighted_indices(u, params["weights"]),
                              hparams["scale"], params["h"], num)

    def var_ratio(params):
        _, cov = masked_cov(params["points"], params["weights"])
        t_trace = params["test_trace"]
        return (jnp.trace(cov) + d * params["h"] ** 2) / t_trace, t_trace

    def evaluate(params, real, hparams):
        del real, hparams  # the held-out points are in params (see _held_out)
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


# ----------------------------------------------------------------------------------------------
# Exact incremental fast path: accumulate with a fixed bandwidth

#: Regimes whose pool only ever gains points (so, with a fixed bandwidth, old kernel values stay).
FAST_REGIMES = ("accumulate",)

#: log of an empty kernel sum, kept finite (a -inf parameter would raise the ``nonfinite`` flag):
#: ``logaddexp(LOG_ZERO, v) == v`` for every finite ``v`` of a kernel sum.
LOG_ZERO = float(jnp.finfo(jnp.float32).min)


def moments(x: Float[Array, "k d"], w: Float[Array, " k"]) -> dict[str, Array]:
    """Weight total, weighted mean and centred scatter of the rows of ``x`` (two passes).

    Args:
        x: ``[k, d]`` rows.
        w: ``[k]`` weights >= 0; rows of weight 0 do not count.

    Returns:
        ``{"weight": [], "mean": [d], "scatter": [d, d]}`` with ``scatter = sum_j w_j (x_j -
        mean)(x_j - mean)^T`` (all zero for zero total weight); ``scatter / weight`` is
        ``pool.masked_cov``'s covariance.

    >>> import jax.numpy as jnp
    >>> m = moments(jnp.array([[0.], [2.], [99.]]), jnp.array([1., 1., 0.]))
    >>> float(m["weight"]), m["mean"].tolist(), m["scatter"].tolist()
    (2.0, [1.0], [[2.0]])

    References:
        Chan, Golub, LeVeque 1979, "Updating formulae and a pairwise algorithm for computing
            sample variances" (the two-pass algorithm).
    """
    total = jnp.sum(w)
    mean = (w @ x) * safe_reciprocal(total)
    xc = x - mean[None, :]
    return {"weight": total, "mean": mean, "scatter": (xc * w[:, None]).T @ xc}


def merge_moments(a: dict[str, Array], b: dict[str, Array]) -> dict[str, Array]:
    """Moments of the union of two weighted point sets (Chan et al.'s pairwise update, exact).

    Args:
        a: ``moments`` of one set (``weight []``, ``mean [d]``, ``scatter [d, d]``).
        b: ``moments`` of the other; either may have zero weight.

    Returns:
        The ``moments`` of the union.

    >>> import jax.numpy as jnp
    >>> x, w = jnp.array([[0.], [2.], [5.], [7.]]), jnp.array([1., 2., 1., 3.])
    >>> m, whole = merge_moments(moments(x[:1], w[:1]), moments(x[1:], w[1:])), moments(x, w)
    >>> bool(jnp.allclose(m["mean"], whole["mean"])), bool(jnp.allclose(m["scatter"],
    ...                                                                 whole["scatter"]))
    (True, True)

    References:
        Chan, Golub, LeVeque 1979, "Updating formulae and a pairwise algorithm for computing
            sample variances".
    """
    total = a["weight"] + b["weight"]
    inv = safe_reciprocal(total)
    delta = b["mean"] - a["mean"]
    return {
        "weight": total,
        "mean": a["mean"] + (b["weight"] * inv) * delta,
        "scatter": a["scatter"] + b["scatter"]
        + (a["weight"] * b["weight"] * inv) * (delta[:, None] * delta[None, :]),
    }


def prefix_weighted_indices(
    u: Float[Array, " num"], n_real: int, n_synth: Array, real_weight
) -> Int[Array, " num"]:
    """``num`` indices of an accumulate pool drawn with probability proportional to the weights.

    The pool is a valid prefix: ``n_real`` real slots of weight ``real_weight`` then ``n_synth``
    synthetic slots of weight 1. Closed-form inverse CDF in O(num), no pass over the capacity:
    ``u = U * W`` with ``W = real_weight n_real + n_synth``; a real slot ``floor(u /
    real_weight)`` below ``real_weight n_real``, else ``n_real + floor(u - real_weight n_real)``.
    Returns the same indices as ``pool.weighted_indices(u, w)`` on the pool's weights ``w``
    whenever their cumulative sums are exact in float32 (``real_weight`` a power of two, pools
    below 2^24 slots).

    Args:
        u: ``[num]`` uniforms in ``[0, 1)``.
        n_real: static number of real slots (``n0``), the first slots of the pool.
        n_synth: int32 or float32 scalar, number of synthetic slots after them.
        real_weight: float32 scalar >= 0, the weight of a real slot.

    Returns:
        ``[num]`` int32 indices in ``[0, n_real + n_synth)``.

    >>> import jax, jax.numpy as jnp
    >>> u = jax.random.uniform(jax.random.key(0), (50,))
    >>> idx = prefix_weighted_indices(u, 3, jnp.int32(2), jnp.float32(0.0))
    >>> sorted(set(idx.tolist()))  # real weight 0: only the synthetic slots 3 and 4
    [3, 4]

    References:
        Devroye 1986, "Non-Uniform Random Variate Generation", ch. II.2 (inversion).
    """
    rw = jnp.asarray(real_weight, jnp.float32)
    ns = jnp.asarray(n_synth, jnp.float32)
    w_real = rw * n_real
    u = u.astype(jnp.float32) * (w_real + ns)
    real_idx = jnp.floor(u / jnp.where(rw > 0, rw, 1.0))
    real_idx = jnp.clip(real_idx, 0, n_real - 1).astype(jnp.int32)
    synth_idx = n_real + jnp.clip(jnp.floor(u - w_real), 0, jnp.maximum(ns - 1, 0))
    return jnp.where((u < w_real) | (ns == 0), real_idx, synth_idx.astype(jnp.int32))


def _make_fast(static: StaticConfig) -> GenerativeModel:
    """The KDE under ``accumulate`` with a fixed bandwidth, evaluated incrementally.

    Parameters (besides the pool ``points`` and ``h``, as the full path): the held-out points
    ``test`` (``init`` receives them; ``fit`` does not), ``seen`` (slots folded in so far), the
    running log kernel sums at every test point of the real slots ``lse_real`` and of the
    synthetic slots ``lse_synth`` (``[n_test]``, unnormalised, unweighted), and the running
    moments of both. Each fit folds in the slots written since the last one (a block of ``n``,
    found from ``seen``): O(n_test n) kernel evaluations instead of O(n_test capacity).
    """
    d, n0 = static.d, static.n0
    capacity = make_regime(static).capacity
    n = min(static.n, capacity)  # slots a generation appends (capacity < n only if G = 1)

    def init(key, real, hparams):
        del key
        h = jnp.asarray(hparams["h"], jnp.float32)
        return {
            "points": jnp.zeros((capacity, d), jnp.float32),
            "h": h,
            **_held_out(real),
            "seen": jnp.int32(n0),
            "lse_real": log_kernel_sum(real.test, real.train, jnp.zeros((n0,), jnp.float32), h),
            "lse_synth": jnp.full(real.test.shape[:1], LOG_ZERO, jnp.float32),
            "real": moments(real.train, jnp.ones((n0,), jnp.float32)),
            "synth": moments(jnp.zeros((1, d), jnp.float32), jnp.zeros((1,), jnp.float32)),
        }

    def fit(key, pool, params, hparams):
        # Fold in the slots written since the last fit: an accumulate pool only appends, at
        # n0 + (g - 1) n, so they are the block of n starting at `seen`.
        del key
        h = jnp.asarray(hparams["h"], jnp.float32)
        seen = params["seen"]
        start = jnp.clip(seen, 0, capacity - n)
        idx = start + jnp.arange(n, dtype=jnp.int32)
        new = pool.valid[idx] & (idx >= seen)
        block = jax.lax.dynamic_slice_in_dim(pool.data, start, n, axis=0)
        logw = jnp.where(new, jnp.float32(0.0), -jnp.inf)
        lse_block = log_kernel_sum(params["test"], block, logw, h)
        w = new.astype(jnp.float32)
        return {
            **params,
            "points": pool.data,
            "h": h,
            "seen": seen + jnp.sum(new, dtype=jnp.int32),
            "lse_synth": jnp.logaddexp(params["lse_synth"], lse_block),
            "synth": merge_moments(params["synth"], moments(block, w)),
        }

    def sample(key, params, real, hparams, num):
        del real
        return _kernel_sample(
            key, params["points"],
            lambda u: prefix_weighted_indices(u, n0, params["synth"]["weight"],
                                              hparams["real_weight"]),
            hparams["scale"], params["h"], num)

    def var_ratio(params, hparams):
        rw = jnp.asarray(hparams["real_weight"], jnp.float32)
        r = params["real"]
        weighted = {"weight": rw * r["weight"], "mean": r["mean"], "scatter": rw * r["scatter"]}
        pooled = merge_moments(weighted, params["synth"])
        trace = jnp.trace(pooled["scatter"]) * safe_reciprocal(pooled["weight"])
        t_trace = params["test_trace"]
        return (trace + d * params["h"] ** 2) / t_trace, t_trace

    def evaluate(params, real, hparams):
        del real  # the held-out points are in params (see _held_out)
        rw = jnp.asarray(hparams["real_weight"], jnp.float32)
        h = params["h"]
        log_rw = jnp.where(rw > 0, jnp.log(jnp.where(rw > 0, rw, 1.0)), -jnp.inf)
        mix = jnp.logaddexp(log_rw + params["lse_real"], params["lse_synth"])
        total = rw * n0 + params["synth"]["weight"]
        log_density = mix - jnp.log(total) + _log_norm(d, h)
        return {
            "nll": -jnp.mean(log_density),
            "bandwidth": h,
            "var_ratio": var_ratio(params, hparams)[0],
        }

    def collapsed(params, real, hparams):
        del real
        ratio, t_trace = var_ratio(params, hparams)
        return (ratio <= COLLAPSE_FLOOR) & jnp.isfinite(t_trace)

    return GenerativeModel(init, fit, sample, evaluate, collapsed)
