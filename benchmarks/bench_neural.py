"""Throughput of neural chains: K vmapped chains in one program vs K sequential single chains.

Model: the ``vae`` family on 8x8 digits (MLP 64-128-8, batch 64, Adam), ``replace``, a few
generations of a fixed number of steps. Both modes run the same chains (same keys, same numbers):

- ``vmapped``: one compiled program over all K chains (``programs.reference_program``);
- ``sequential``: one compiled single-chain program called K times in a Python loop.

Compilation is timed separately; the steady state is the median over ``--repeats`` (>= 5) runs.
Throughput counts training examples: chains x generations x steps x batch per second.

Usage:
    python benchmarks/bench_neural.py --chains 32 --repeats 5 --out benchmarks/bench_neural.jsonl

Writes JSON lines (one per mode, then one with the ratio) to stdout and, with ``--out``, appends
them to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import collapse_jax as cj
from collapse_jax.programs import reference_program as compiled_sweep_fn


def _static(args: argparse.Namespace) -> cj.StaticConfig:
    options = {"hidden": args.hidden, "latent": 8, "batch": args.batch, "steps": args.steps,
               "eval_samples": 256}
    return cj.StaticConfig(model="vae", regime="replace", n0=args.n, n=args.n, d=64,
                           generations=args.generations, n_test=397, source="digits",
                           options=tuple(sorted(options.items())))


def _timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--chains", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--out", default=None, help="append JSON lines here")
    args = p.parse_args()
    if args.repeats < 5:
        p.error("--repeats must be >= 5 (median of at least 5 steady-state runs)")

    static = _static(args)
    data = cj.make_source(static).load(static)
    k = args.chains
    root = jax.random.key(0)
    ids = jnp.arange(k, dtype=jnp.int32)
    hp = {"lr": jnp.full((k,), 1e-3, jnp.float32)}
    fn = compiled_sweep_fn(static)

    t0 = time.perf_counter()
    vm = fn.lower(root, ids, hp, data).compile()
    compile_vmapped = time.perf_counter() - t0
    t0 = time.perf_counter()
    one = fn.lower(root, ids[:1], {"lr": hp["lr"][:1]}, data).compile()
    compile_single = time.perf_counter() - t0

    singles_ids = [ids[i:i + 1] for i in range(k)]
    single_hp = {"lr": hp["lr"][:1]}
    jax.block_until_ready(vm(root, ids, hp, data))  # warm-up (first-call allocations)
    jax.block_until_ready(one(root, singles_ids[0], single_hp, data))

    t_vm = _timed(lambda: vm(root, ids, hp, data), args.repeats)
    t_seq = _timed(lambda: [one(root, i, single_hp, data) for i in singles_ids], args.repeats)

    # The two modes compute the same chains: check (float32 reassociation tolerance).
    m_vm = jax.device_get(vm(root, ids, hp, data))[1]["neg_elbo"]
    m_seq = np.concatenate([jax.device_get(one(root, i, single_hp, data))[1]["neg_elbo"]
                            for i in singles_ids])
    max_rel = float(np.max(np.abs(m_vm - m_seq) / np.abs(m_seq)))

    examples = k * args.generations * args.steps * args.batch
    common = {
        "bench": "neural_vae_digits", "chains": k, "generations": args.generations,
        "steps": args.steps, "batch": args.batch, "hidden": args.hidden,
        "repeats": args.repeats, "jax": jax.__version__, "backend": jax.default_backend(),
        "cpus": os.cpu_count(), "machine": platform.machine(),
        "load_avg_1min": os.getloadavg()[0],
    }
    rows = []
    for mode, times, comp in (("vmapped", t_vm, compile_vmapped),
                              ("sequential", t_seq, compile_single)):
        med = statistics.median(times)
        rows.append({**common, "mode": mode, "compile_seconds": round(comp, 3),
                     "median_seconds": round(med, 4), "all_seconds": [round(t, 4) for t in times],
                     "examples_per_second": round(examples / med, 1)})
    rows.append({**common, "mode": "ratio",
                 "speedup_vmapped_over_sequential": round(
                     rows[0]["examples_per_second"] / rows[1]["examples_per_second"], 3),
                 "max_rel_diff_neg_elbo": max_rel})
    lines = [json.dumps(r) for r in rows]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
