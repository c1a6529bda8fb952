"""2-D toy sources: moons, circles and swiss roll, generated in JAX inside ``draw``.

I.i.d. versions of scikit-learn's ``make_moons``, ``make_circles(factor=0.8)`` and
``make_swiss_roll`` (x, z coordinates), with Gaussian noise of standard deviation ``noise`` (a
hyperparameter): scikit-learn places points at evenly spaced angles with exactly half per
component; here the angle is uniform and the component a fair coin, so training, test and fresh
data are i.i.d. draws from one distribution.

References:
    Pedregosa et al. 2011, "Scikit-learn: Machine Learning in Python", JMLR 12 (the datasets).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from collapse_jax.config import StaticConfig
from collapse_jax.model import Source, register_source
from collapse_jax.rng import box_muller
from collapse_jax.types import RealData

TOY_SOURCES = ("moons", "circles", "swiss_roll")
CIRCLES_FACTOR = 0.8


def toy_points(name: str, key, num: int, noise) -> Float[Array, "num 2"]:
    """``num`` i.i.d. points of a 2-D toy distribution (see module docstring), float32.

    All the randomness comes from one uniform draw ``[4, num]``: the component (a fair coin),
    the position along the curve, and two uniforms turned into the Gaussian noise
    (``rng.box_muller``). One random-number call instead of four (coin, angle, normals and the
    key split)
    keeps the compiled chain programs small: each threefry call is a separate block of code for
    XLA to compile.

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
    eps = jnp.asarray(noise, jnp.float32) * box_muller(u[2:], 2)
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
