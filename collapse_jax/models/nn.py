"""Shared pieces of the neural families (flax ``nnx`` modules kept as plain pytrees)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


def lecun_normal_state(key: jax.Array, abstract: nnx.State) -> nnx.State:
    """Fresh parameters for an abstract State: LeCun-normal kernels ``N(0, 1/fan_in)``, zero biases.

    One normal draw for all kernels: the same distribution as per-layer initializers (untruncated)
    at a fraction of the XLA compile time, which matters because a chain compiles this twice.
    """
    leaves, treedef = jax.tree.flatten(abstract)
    sizes = [math.prod(x.shape) if len(x.shape) == 2 else 0 for x in leaves]
    z = jax.random.normal(key, (max(sum(sizes), 1),), jnp.float32)
    out, start = [], 0
    for x, size in zip(leaves, sizes, strict=True):
        if size:
            w = z[start:start + size].reshape(x.shape) / jnp.sqrt(jnp.float32(x.shape[0]))
            out.append(w.astype(jnp.float32))
            start += size
        else:
            out.append(jnp.zeros(x.shape, jnp.float32))
    return jax.tree.unflatten(treedef, out)
