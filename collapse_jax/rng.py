"""``jax.random.normal``, ``uniform``, ``split`` and ``fold_in`` with the same bits, faster on CPU.

JAX lowers the threefry2x32 hash on CPU as a rolled loop of 5 iterations
(``jax/_src/random/threefry2x32.py``, ``use_rolled_loops=True``). XLA cannot fuse a loop with
what consumes it, so every random call writes its hash state to memory 5 times, then converts
it to floats in a separate pass. Here the same hash is written out in ``jnp``, unrolled, so XLA
fuses the hash, the float conversion and ``erf_inv`` into one loop: several times the standard
normals per second of ``jax.random.normal`` on CPU (benchmarks/README.md), and bit-identical to it
(``tests/test_rng.py``).

The bits are those of ``jax.random`` with ``jax_threefry_partitionable`` on (JAX's default): the
hash of the 64-bit flat index of each element under the key, the two output words xor-ed for 32
bits or concatenated for 64. A key of another implementation, the flag off, an array of 2^32 or
more elements or a dtype other than float32/float64 falls back to ``jax.random`` (same results,
its speed). Like ``jax.random``'s, the functions are jitted (a multiply-add rounds the same
inside and outside a caller's jit). Draws of any shape are computed flat and reshaped. XLA CPU
vectorises the generator along the last axis of the result, so a short last axis is slow: under
``vmap``, draw ``[10, 100]`` rather than ``[100, 10]``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from collapse_jax.types import PRNGKey

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotl(x: jax.Array, r: int) -> jax.Array:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(k1: jax.Array, k2: jax.Array, x1: jax.Array,
                 x2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The Threefry-2x32 hash (20 rounds, Salmon et al. 2011), unrolled: as JAX's primitive."""
    ks = (k1, k2, k1 ^ k2 ^ _PARITY)
    a, b = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            a = a + b
            b = a ^ _rotl(b, r)
        a = a + ks[(i + 1) % 3]
        b = b + ks[(i + 2) % 3] + np.uint32(i + 1)
    return a, b


def _threefry_data(key: PRNGKey, size: int, consume: bool = True) -> jax.Array | None:
    """The key's two uint32 words, or None when ``jax.random`` must do it (see the module doc).

    ``consume``: mark the key used for ``jax_debug_key_reuse``, as ``jax.random`` draws and
    ``split`` do (``fold_in`` does not).
    """
    if not jax.config.jax_threefry_partitionable or size >= 2**32:
        return None
    if not (isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)):
        return None
    if "threefry2x32" not in str(jax.random.key_impl(key)) or key.shape:
        return None
    if not consume:
        return jax.random.key_data(key)
    # so that jax_debug_key_reuse still catches a reused key: a jax.random draw that the result
    # depends on in the jaxpr, times 0 (XLA folds it away)
    mark = jax.random.bits(key, (), np.uint32) * np.uint32(0)
    return jax.random.key_data(key) + mark


def _bits(data: jax.Array, size: int, width: int) -> jax.Array:
    lo = lax.iota(np.uint32, size)
    b1, b2 = threefry2x32(data[0], data[1], jnp.zeros_like(lo), lo)
    if width == 32:
        return b1 ^ b2
    return (b1.astype(np.uint64) << np.uint64(32)) | b2.astype(np.uint64)


def _unit(data: jax.Array, size: int, dtype: np.dtype) -> jax.Array:
    """Floats in [0, 1) from the mantissa bits, as ``jax.random.uniform``."""
    finfo = jnp.finfo(dtype)
    width, nmant = finfo.bits, finfo.nmant
    uint = np.uint32 if width == 32 else np.uint64
    bits = _bits(data, size, width)
    one = np.array(1.0, dtype).view(uint)
    mant = (bits >> uint(width - nmant)) | one
    return lax.bitcast_convert_type(mant, dtype) - np.array(1.0, dtype)


def _shape(shape) -> tuple[int, ...]:
    return (shape,) if isinstance(shape, int) else tuple(shape)


def _fast_dtype(dtype) -> np.dtype | None:
    dt = jnp.dtype(dtype)
    if dt == np.float64 and not jax.config.jax_enable_x64:
        dt = np.dtype(np.float32)  # what jax.random does with float64 when x64 is off
    return dt if dt in (np.dtype(np.float32), np.dtype(np.float64)) else None


def _uniform(data: jax.Array, shape: tuple[int, ...], dt: np.dtype, minval, maxval) -> jax.Array:
    lo, hi = lax.convert_element_type(minval, dt), lax.convert_element_type(maxval, dt)
    u = _unit(data, math.prod(shape), dt)
    return lax.max(lo, (u * (hi - lo) + lo).reshape(shape))


@functools.partial(jax.jit, static_argnums=(1, 2))
def uniform(key: PRNGKey, shape=(), dtype=jnp.float32, minval=0.0, maxval=1.0) -> jax.Array:
    """``jax.random.uniform(key, shape, dtype, minval, maxval)``, same bits.

    >>> import jax
    >>> k = jax.random.key(0)
    >>> bool((uniform(k, (3, 5)) == jax.random.uniform(jax.random.clone(k), (3, 5))).all())
    True
    """
    shape, dt = _shape(shape), _fast_dtype(dtype)
    data = None if dt is None else _threefry_data(key, math.prod(shape))
    if data is None:
        return jax.random.uniform(key, shape, dtype, minval, maxval)
    return _uniform(data, shape, dt, minval, maxval)


@functools.partial(jax.jit, static_argnums=(1, 2))
def normal(key: PRNGKey, shape=(), dtype=jnp.float32) -> jax.Array:
    """``jax.random.normal(key, shape, dtype)`` for real dtypes, same bits.

    >>> import jax
    >>> k = jax.random.key(0)
    >>> bool((normal(k, (4, 3)) == jax.random.normal(jax.random.clone(k), (4, 3))).all())
    True
    """
    shape, dt = _shape(shape), _fast_dtype(dtype)
    data = None if dt is None else _threefry_data(key, math.prod(shape))
    if data is None:
        return jax.random.normal(key, shape, dtype)
    lo = np.nextafter(np.array(-1.0, dt), np.array(0.0, dt), dtype=dt)
    u = _uniform(data, shape, dt, lo, np.array(1.0, dt))
    return np.array(np.sqrt(2), dt) * lax.erf_inv(u)


def _wrap(b1: jax.Array, b2: jax.Array, like: PRNGKey) -> PRNGKey:
    return jax.random.wrap_key_data(jnp.stack([b1, b2], axis=-1), impl=jax.random.key_impl(like))


@functools.partial(jax.jit, static_argnums=1)
def split(key: PRNGKey, num: int = 2) -> PRNGKey:
    """``jax.random.split(key, num)``, same keys.

    >>> import jax
    >>> k = jax.random.key(0)
    >>> bool((jax.random.key_data(split(k, 3))
    ...       == jax.random.key_data(jax.random.split(jax.random.clone(k), 3))).all())
    True
    """
    data = _threefry_data(key, num)
    if data is None:
        return jax.random.split(key, num)
    lo = lax.iota(np.uint32, num)
    return _wrap(*threefry2x32(data[0], data[1], jnp.zeros_like(lo), lo), key)


def fold_in(key: PRNGKey, data) -> PRNGKey:
    """``jax.random.fold_in(key, data)`` for a scalar integer ``data``, same key.

    >>> import jax
    >>> k = jax.random.key(0)
    >>> bool((jax.random.key_data(fold_in(k, 7))
    ...       == jax.random.key_data(jax.random.fold_in(jax.random.clone(k), 7))).all())
    True
    """
    return _fold_in(key, jnp.asarray(data, dtype=np.uint32))


@jax.jit
def _fold_in(key: PRNGKey, msg: jax.Array) -> PRNGKey:
    kd = _threefry_data(key, 1, consume=False)
    if kd is None:
        return jax.random.fold_in(key, msg)
    return _wrap(*threefry2x32(kd[0], kd[1], jnp.zeros_like(msg), msg), key)


def box_muller(u: jax.Array, d: int) -> jax.Array:
    """``[num, d]`` independent standard normals from uniforms ``u [2 ceil(d / 2), num]`` in
    ``[0, 1)`` (Box-Muller), for a caller that draws its uniforms with other random numbers.

    Rows ``2i, 2i + 1`` of ``u`` give normals ``2i, 2i + 1``: ``r = sqrt(-2 log(1 - u_2i))``,
    ``(r cos 2 pi u_2i+1, r sin 2 pi u_2i+1)``; ``u`` needs ``2 ceil(d / 2)`` rows. float32
    uniforms (``1 - u >= 2^-23``) cap ``|z|`` at 5.65; ``jax.random.normal``'s cap is about 5.4.

    >>> import jax.numpy as jnp
    >>> z = box_muller(jnp.array([[0.5], [0.0]]), 2)  # r = sqrt(2 log 2), angle 0
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
