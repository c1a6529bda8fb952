"""Scale-out benchmark: chains/s vs number of (fake) devices, and the cost of never losing work.

    python benchmarks/bench_scale.py [--repeats 5] [--quick] [--out benchmarks/bench_scale.jsonl]

Prints one JSON line per measurement (medians over ``--repeats`` runs; compile timed separately,
before the timed repeats):

1. ``devices``: ``run_sweep`` chains/s on 1, 2 and 8 fake CPU devices
   (``XLA_FLAGS=--xla_force_host_platform_device_count=K``, one subprocess each). The fake devices
   share the machine's real cores, so the expected result is flat: sharding buys nothing on one
   CPU host; it is there for GPUs, TPUs and many hosts.
2. ``overhead``: ``run_experiment`` wall time with the default (time-sized) generation chunks +
   results parts + orbax checkpoints (``out_dir``, the CLI's path; default ``checkpoint_seconds``,
   and a checkpoint at every chunk) against one chunk in memory (``generation_chunk = generations
   - 1``, no ``out_dir``), as a percentage of the latter; also chunks without parts, to split the
   costs, and the old fixed chunks of a tenth of the chain with a checkpoint at each. Goal: < 5%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def emit(record: dict, out: str | None) -> None:
    """Print one JSON line (and append it to ``out``)."""
    line = json.dumps(record)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def _sweep_child(args) -> None:
    import jax
    import numpy as np

    import collapse_jax as cj
    from collapse_jax.sweep import run_sweep

    static = cj.StaticConfig(model="gaussian", regime="accumulate", n0=args.n, n=args.n, d=args.d,
                             generations=args.generations, n_test=100)
    ids = np.arange(args.chains)
    hp = {"sigma": np.ones(args.chains, np.float32), "scale": np.ones(args.chains, np.float32)}
    first = run_sweep(static, jax.random.key(0), ids, hp, {}, chunk_size=args.chains)
    times = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        res = run_sweep(static, jax.random.key(r + 1), ids, hp, {}, chunk_size=args.chains)
        times.append(time.perf_counter() - t0)
        assert res.compile_seconds < 0.5 * first.compile_seconds + 0.05  # cached
    med = statistics.median(times)
    print(json.dumps({
        "bench": "devices", "devices": jax.device_count(), "chains": args.chains,
        "generations": args.generations, "n": args.n, "d": args.d,
        "compile_s": round(first.compile_seconds, 3), "run_s_median": round(med, 4),
        "run_s_all": [round(t, 4) for t in times], "chains_per_s": round(args.chains / med, 1),
    }), flush=True)


def _devices(args) -> None:
    for k in (1, 2, 8):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={k}",
               "JAX_PLATFORMS": "cpu"}
        cmd = [sys.executable, __file__, "--child", "--repeats", str(args.repeats),
               "--chains", str(args.chains), "--generations", str(args.generations),
               "--n", str(args.n), "--d", str(args.d)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        emit(json.loads(out.stdout.strip().splitlines()[-1]), args.out)


def _overhead(args) -> None:
    import collapse_jax as cj

    exp = cj.Experiment(name="bench", model="gaussian", regimes=("accumulate",),
                        seeds=args.chains, generations=args.generations, n=args.n, d=args.d,
                        n_test=100, chunk_size=args.chains,
                        options={"fast_path": False})  # the sample path: real work per chunk
    tenth = -(-(args.generations - 1) // 10)
    variants = {
        "one_chunk_in_memory": dict(
            exp=cj.override(exp, [f"generation_chunk={args.generations - 1}"]), out=False),
        "time_sized_chunks_in_memory": dict(exp=exp, out=False),
        "time_sized_chunks_parts_checkpoints": dict(exp=exp, out=True),  # the CLI's defaults
        "time_sized_chunks_parts_checkpoint_every_chunk": dict(
            exp=cj.override(exp, ["checkpoint_seconds=0"]), out=True),
        "tenth_chunks_parts_checkpoint_every_chunk": dict(
            exp=cj.override(exp, ["checkpoint_seconds=0", f"generation_chunk={tenth}"]), out=True),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants.values():  # compile everything first
            cj.run_experiment(v["exp"], out_dir=Path(tmp) / "warm" if v["out"] else None)
        times = {name: [] for name in variants}
        chunks = {name: [] for name in variants}
        for r in range(args.repeats):
            for name, v in variants.items():  # interleaved: load drifts hit every variant
                calls = [0]

                def progress(label, done, total, calls=calls):
                    calls[0] += label is not None

                t0 = time.perf_counter()
                cj.run_experiment(v["exp"], out_dir=Path(tmp) / f"{name}{r}" if v["out"]
                                  else None, progress=progress)
                times[name].append(time.perf_counter() - t0)
                chunks[name].append(calls[0])  # generation chunks, init included
    base = statistics.median(times["one_chunk_in_memory"])
    for name, ts in times.items():
        med = statistics.median(ts)
        emit({
            "bench": "overhead", "variant": name, "chains": args.chains,
            "generations": args.generations, "n": args.n, "d": args.d,
            "chunks": chunks[name], "wall_s_median": round(med, 4),
            "wall_s_all": [round(t, 4) for t in ts],
            "overhead_pct": round(100 * (med - base) / base, 2),
        }, args.out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--chains", type=int, default=256)
    p.add_argument("--generations", type=int, default=100)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--d", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--only", choices=("devices", "overhead"))
    p.add_argument("--out", help="append the JSON lines to this file")
    args = p.parse_args()
    if args.quick:
        args.chains, args.generations, args.n, args.d = 16, 12, 10, 2
    if args.child:
        _sweep_child(args)
        return
    emit({"bench": "machine", "cpus": os.cpu_count(),
          "loadavg": [round(x, 2) for x in os.getloadavg()]}, args.out)
    if args.only in (None, "devices"):
        _devices(args)
    if args.only in (None, "overhead"):
        _overhead(args)


if __name__ == "__main__":
    main()
