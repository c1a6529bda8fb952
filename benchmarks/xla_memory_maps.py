"""Why one long process used to crash in XLA's CPU compiler: memory maps, reproduced in seconds.

Each compiled XLA CPU program keeps its machine code in memory maps, and Linux lets a process hold
at most ``vm.max_map_count`` of them (65,530 by default). A pytest process over the whole suite
compiled a few hundred chain programs, never released them, and died with ``LLVM compilation
error: Cannot allocate memory`` and a segmentation fault while RAM was free.

This script shows the three facts behind it, without waiting for hundreds of compiles:

1. ``per_program``: memory maps a process gains per compiled chain program, and what
   ``collapse_jax.clear_caches()`` gives back;
2. ``near_limit``: a child process fills its map table with small anonymous ``mmap`` regions up to
   ``max_map_count - headroom`` and then compiles one chain program: with little headroom the
   compile fails exactly as the suite did (the child's exit status and XLA's message are
   reported); with a few thousand maps free it compiles;
3. the fix in collapse_jax: compiled programs are held in a bounded cache
   (``compiling.MAX_EXECUTABLES``) and the test conftest calls ``clear_caches()`` after each file.

Usage: ``python benchmarks/xla_memory_maps.py [--out benchmarks/results/xla_memory_maps.json]``.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import subprocess
import sys
from pathlib import Path


def count_maps() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def max_map_count() -> int:
    return int(Path("/proc/sys/vm/max_map_count").read_text())


def _chain_program(d: int):
    """Lower and compile one Gaussian chain program (``d`` makes each one distinct)."""
    import jax
    import jax.numpy as jnp

    import collapse_jax as cj

    static = cj.StaticConfig(model="gaussian", regime="accumulate", n0=16, n=16, d=d,
                             generations=3, n_test=16)
    chain = cj.make_chain(static)
    args = chain.source.load(static)
    hp = {"sigma": jnp.float32(1.0), "scale": jnp.float32(1.0)}
    fn = jax.jit(lambda k, h, a: cj.run_chain(chain, k, h, a))
    return fn.lower(jax.random.key(0), hp, args).compile()


def per_program(programs: int = 4) -> dict:
    import collapse_jax as cj

    _chain_program(2)  # backend and imports up before counting
    start = count_maps()
    held = [_chain_program(3 + i) for i in range(programs)]
    grown = count_maps() - start
    del held
    cj.clear_caches()
    return {"programs": programs, "maps_per_program": grown / programs,
            "maps_after_clear_caches": count_maps() - start}


def _child(headroom: int) -> None:
    """Fill the map table to ``max_map_count - headroom``, then compile one chain program."""
    import scipy.linalg  # noqa: F401  (imported before the table is full)

    _chain_program(2)
    limit, hold, i = max_map_count(), [], 0
    while (gap := limit - headroom - count_maps()) > 0:
        for _ in range(max(1, gap // 2)):  # alternate protections: adjacent maps do not merge
            prot = mmap.PROT_READ if i % 2 else mmap.PROT_READ | mmap.PROT_WRITE
            hold.append(mmap.mmap(-1, mmap.PAGESIZE, prot=prot))
            i += 1
    print(json.dumps({"maps_before_compile": count_maps(), "limit": limit}), flush=True)
    _chain_program(5)
    print(json.dumps({"compiled": True, "maps_after_compile": count_maps()}), flush=True)


def near_limit(headroom: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", str(headroom)],
                          capture_output=True, text=True, timeout=600)
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    llvm = [x for x in proc.stderr.splitlines() if "LLVM compilation error" in x]
    return {"headroom": headroom, "exit_status": proc.returncode,
            "compiled": any(x.get("compiled") for x in lines),
            "xla_error": llvm[0].split("] ", 1)[-1] if llvm else None,
            "llvm_errors": len(llvm)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help="append the record to this JSON-lines file")
    args = parser.parse_args()
    if args.child is not None:
        _child(args.child)
        return
    record = {"max_map_count": max_map_count(), "per_program": per_program(),
              "near_limit": [near_limit(h) for h in (100, 2000)]}
    print(json.dumps(record, indent=1))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("COLLAPSE_JAX_CACHE_DIR", "off")
    main()
