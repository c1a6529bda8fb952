"""LAPACK-backed linear algebra that cannot hang a multi-device CPU sweep.

jaxlib 0.10.2's CPU LAPACK kernels (Cholesky, QR, eigh, triangular solve, ...) split a *batched*
call into pieces on XLA's intra-op thread pool and block until the pieces are done. A sharded sweep
on several CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=K``) runs one such call
per device at the same time; once every pool thread (one per core) is blocked in one, nobody is
left to run the pieces and the process hangs with all threads idle (``benchmarks/bench_scale.py``
found it on 2 fake devices; later jaxlib releases compile that path out).

The same happens on ONE device when a program runs two independent LAPACK calls at once (the
thunk executor puts each on a pool thread): the random hangs that ``collapse_jax/_xla.py``'s
flags made rare.

The functions below are the ``jnp.linalg`` ones, except that on a CPU backend each call runs one
matrix at a time (``lax.map`` over the batch, also under ``vmap`` through a ``custom_vmap``
rule): a one-matrix LAPACK call is never split, so it never waits on the pool. Each matrix goes
through the same LAPACK routine, and every CPU program (1 or K devices) has the same loop, so a
chain's numbers do not depend on the device count (``tests/test_sweep.py``). It costs about a
tenth of a Gaussian sweep on CPU (benchmarks/README.md; ``PER_MATRIX`` forces either way). On GPU
and TPU they are the plain batched calls.

>>> import jax, jax.numpy as jnp
>>> a = jnp.array([[4.0, 2.0], [2.0, 3.0]])
>>> bool(jnp.allclose(cholesky(a), jnp.linalg.cholesky(a)))
True
>>> jax.vmap(eigvalsh)(jnp.stack([a, 2 * a])).shape
(2, 2)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

#: Force the one-matrix-at-a-time calls on (True), off (False), or decide by backend (None).
PER_MATRIX: bool | None = None


def per_matrix() -> bool:
    """Whether LAPACK calls run one matrix at a time (on a CPU backend, unless ``PER_MATRIX``)."""
    if PER_MATRIX is not None:
        return PER_MATRIX
    return jax.default_backend() == "cpu"


def _one_at_a_time(op: Callable[..., Any], core: tuple[int, ...]) -> Callable[..., Any]:
    """``op`` on arrays whose last ``core[i]`` axes are one problem, looped over the rest.

    Leading (batch) axes are broadcast across the arguments, flattened, and mapped with
    ``lax.map``; under ``vmap`` the ``custom_vmap`` rule moves the mapped axis in front and does
    the same, so no batched LAPACK call is ever emitted.
    """

    def looped(*xs):
        lead = jnp.broadcast_shapes(*(x.shape[: x.ndim - c] for x, c in zip(xs, core, strict=True)))
        if not lead:
            return op(*xs)
        flat = [jnp.broadcast_to(x, lead + x.shape[x.ndim - c:]).reshape(
            (math.prod(lead),) + x.shape[x.ndim - c:]) for x, c in zip(xs, core, strict=True)]
        out = lax.map(lambda args: op(*args), flat)
        return jax.tree.map(lambda o: o.reshape(lead + o.shape[1:]), out)

    @jax.custom_batching.custom_vmap
    def call(*xs):
        return looped(*xs)

    @call.def_vmap
    def _rule(axis_size, in_batched, *xs):
        xs = [x if b else jnp.broadcast_to(x, (axis_size,) + x.shape)
              for x, b in zip(xs, in_batched, strict=True)]
        out = call(*xs)
        return out, jax.tree.map(lambda _: True, out)

    def wrapped(*xs):
        return call(*xs) if per_matrix() else op(*xs)

    return wrapped


_cholesky = _one_at_a_time(jnp.linalg.cholesky, (2,))
_eigh = _one_at_a_time(jnp.linalg.eigh, (2,))
_eigvalsh = _one_at_a_time(jnp.linalg.eigvalsh, (2,))
_qr_r = _one_at_a_time(lambda x: jnp.linalg.qr(x, mode="r"), (2,))
_trsm = {lower: _one_at_a_time(
    lambda a, b, lower=lower: jax.scipy.linalg.solve_triangular(a, b, lower=lower), (2, 2))
    for lower in (True, False)}


def cholesky(a: jax.Array) -> jax.Array:
    """``jnp.linalg.cholesky`` (lower factor), batched over leading axes."""
    return _cholesky(a)


def eigh(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``jnp.linalg.eigh``: ascending eigenvalues and eigenvectors (columns)."""
    return _eigh(a)


def eigvalsh(a: jax.Array) -> jax.Array:
    """``jnp.linalg.eigvalsh``: ascending eigenvalues of a symmetric matrix."""
    return _eigvalsh(a)


def qr_r(a: jax.Array) -> jax.Array:
    """The ``R`` of ``jnp.linalg.qr(a, mode="r")``: ``[min(m, n), n]``, ``R^T R = a^T a``."""
    return _qr_r(a)


def solve_triangular(a: jax.Array, b: jax.Array, *, lower: bool) -> jax.Array:
    """``jax.scipy.linalg.solve_triangular(a, b, lower=lower)`` for matrix right sides ``b``
    (``[..., m, k]``; leading axes broadcast)."""
    return _trsm[bool(lower)](a, b)
