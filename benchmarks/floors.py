"""Hardware floors of this machine and the roofline floor of a Gaussian chain generation.

Measures (median of >= 5 repeats, after a warm-up call):
- standard normals per second from ``jax.random.normal`` (default PRNG, float32);
- matmul rate: GFLOP/s of a 1024^3 float32 matmul and of the chain's shape, a batch of
  ``[n, d] @ [d, d]`` products;
- copy bandwidth: GB/s of ``x + 1`` over 64 MiB float32 (read + write).

Roofline floor of one sample-based Gaussian chain generation (d, n, pool rows r):
    normals = n d;  flops = 2 n d^2 (z @ root) + 2 r d^2 (scatter of the fit's pool rows);
    bytes = 4 (n d written + r d read)
    floor seconds = normals / normals_rate + flops / matmul_rate, or bytes / bandwidth if larger.
(The O(d^3) eigendecompositions and metrics are left out: the floor is a lower bound.)

    python benchmarks/floors.py          # appends to results/floors.jsonl, prints JSON
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

import common
import jax
import jax.numpy as jnp


@functools.cache
def _programs(size: int, n: int, d: int) -> tuple[Callable, ...]:
    """Jitted probes (cached, so repeated measurements do not recompile)."""
    b = max(1, size // (2 * n * d))
    normal = jax.jit(lambda k: jax.random.normal(k, (size,), jnp.float32))
    mm = jax.jit(lambda x: x @ x)
    bmm = jax.jit(lambda z, r: z @ r)
    cp = jax.jit(lambda x: x + 1.0)
    key = jax.random.key(0)
    a = jax.random.normal(key, (1024, 1024), jnp.float32)
    z = jax.random.normal(key, (b, n, d), jnp.float32)
    r = jax.random.normal(key, (b, d, d), jnp.float32)
    x = jnp.zeros((size,), jnp.float32)
    for fn, arg in ((normal, (key,)), (mm, (a,)), (bmm, (z, r)), (cp, (x,))):
        jax.block_until_ready(fn(*arg))  # compile and warm up
    return normal, mm, bmm, cp, key, a, z, r, x, b


def measure(repeats: int = 7, n: int = 100, d: int = 10, size: int = 1 << 24) -> dict:
    """The machine's rates, medians of ``repeats`` calls after a warm-up: normals/s (``size``
    draws), 1024^3 matmul, a batch of ``[n, d] @ [d, d]`` (about ``size / 2`` elements) and copy
    bandwidth over ``size`` float32. A small ``size`` (e.g. ``1 << 22``) is a quick probe."""
    normal, mm, bmm, cp, key, a, z, r, x, b = _programs(size, n, d)
    t_norm, _ = common.median_time(lambda: normal(key), repeats)
    t_mm, _ = common.median_time(lambda: mm(a), repeats)
    t_bmm, _ = common.median_time(lambda: bmm(z, r), repeats)
    t_cp, _ = common.median_time(lambda: cp(x), repeats)
    return {
        "normals_per_s": size / t_norm,
        "matmul_gflops_1024": 2 * 1024**3 / t_mm / 1e9,
        "matmul_gflops_chain_shape": 2 * b * n * d * d / t_bmm / 1e9,
        "copy_gb_per_s": 2 * 4 * size / t_cp / 1e9,
    }


def gaussian_floor(f: dict, n: int, d: int, pool_rows: int, chains: int = 1,
                   generations: int = 1) -> dict:
    """Floor seconds of ``chains x generations`` sample-based Gaussian generations."""
    normals = n * d
    flops = 2 * n * d * d + 2 * pool_rows * d * d
    nbytes = 4 * (n * d + pool_rows * d)
    compute = normals / f["normals_per_s"] + flops / (f["matmul_gflops_chain_shape"] * 1e9)
    memory = nbytes / (f["copy_gb_per_s"] * 1e9)
    per = max(compute, memory)
    return {"normals": normals, "flops": flops, "bytes": nbytes,
            "seconds_per_chain_gen": per, "seconds": per * chains * generations,
            "normals_only_seconds": normals * chains * generations / f["normals_per_s"]}


if __name__ == "__main__":
    env = common.environment()
    f = measure()
    rec = {**env, **f}
    common.append_jsonl("floors", rec)
    print(json.dumps(rec, indent=1, default=float))
