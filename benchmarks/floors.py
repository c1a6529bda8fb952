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

import json

import common
import jax
import jax.numpy as jnp


def measure(repeats: int = 7) -> dict:
    key = jax.random.key(0)
    m = 1 << 24
    normal = jax.jit(lambda k: jax.random.normal(k, (m,), jnp.float32))
    jax.block_until_ready(normal(key))
    t_norm, _ = common.median_time(lambda: normal(key), repeats)

    a = jax.random.normal(key, (1024, 1024), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    jax.block_until_ready(mm(a))
    t_mm, _ = common.median_time(lambda: mm(a), repeats)

    b, n, d = 10000, 100, 10
    z = jax.random.normal(key, (b, n, d), jnp.float32)
    r = jax.random.normal(key, (b, d, d), jnp.float32)
    bmm = jax.jit(lambda z, r: z @ r)
    jax.block_until_ready(bmm(z, r))
    t_bmm, _ = common.median_time(lambda: bmm(z, r), repeats)

    x = jnp.zeros((1 << 24,), jnp.float32)
    cp = jax.jit(lambda x: x + 1.0)
    jax.block_until_ready(cp(x))
    t_cp, _ = common.median_time(lambda: cp(x), repeats)
    return {
        "normals_per_s": m / t_norm,
        "matmul_gflops_1024": 2 * 1024**3 / t_mm / 1e9,
        "matmul_gflops_chain_shape": 2 * b * n * d * d / t_bmm / 1e9,
        "copy_gb_per_s": 2 * 4 * x.size / t_cp / 1e9,
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
