"""Gaussian chain speed: this checkout against an older revision, in one process.

The Gaussian model (``collapse_jax/models/gaussian.py``) and ``collapse_jax/metrics.py`` of git
revision ``--old`` are loaded next to the current ones and registered as model ``gaussian_old``,
so both run through the same ``run_sweep`` in the same process. Repeats are interleaved (old,
new, old, new, ...) after a compile of each, and the medians compared: on a shared machine only
the ratio is meaningful. Also measured in the same process: standard normals per second from
``jax.random.normal`` on a large array, and the sample-based floor ``n d / normals_per_s`` of one
chain-generation.

    python benchmarks/bench_gaussian.py --old HEAD~3 --regimes replace,accumulate
    python benchmarks/bench_gaussian.py --old HEAD~3 --regimes replace --sample-path \\
        --metrics all

Per chain-generation = ``run_sweep``'s run seconds / (chains x generations) (generation 0, the
real data and the fit on it, included). The floor is ``n d`` divided by the normals per second
of ``jax.random.normal`` (the rate of ``collapse_jax.rng.normal``, same bits, is recorded too).
Both models run through this checkout's ``chain.py`` and ``sweep.py`` on the same ``gaussian``
source. Appends to results/bench_gaussian.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
import types

import common
import jax
import jax.numpy as jnp
import numpy as np

import collapse_jax.rng
from collapse_jax import model as model_registry
from collapse_jax.sweep import run_sweep


def _git_show(rev: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=common.HERE.parent, check=True,
                          capture_output=True, text=True).stdout


def _load(rev: str, path: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(_git_show(rev, path), f"{rev}:{path}", "exec"), module.__dict__)
    return module


def register_old(rev: str, name: str = "gaussian_old") -> types.ModuleType:
    """Register revision ``rev``'s Gaussian model (its ``models/gaussian.py`` with that revision's
    ``models/gaussian_fast.py`` and ``metrics.py``) as ``name``; returns its gaussian module.

    Only revisions with this layout load into this engine (the family's files moved when the
    sources went to ``data/``); compare older revisions with ``compare_revisions.py``.
    """
    models, sources = dict(model_registry.MODELS), dict(model_registry.SOURCES)
    replaced = ("collapse_jax.metrics", "collapse_jax.models.gaussian_fast")
    saved = {k: sys.modules[k] for k in replaced}
    try:
        sys.modules["collapse_jax.metrics"] = _load(rev, "collapse_jax/metrics.py",
                                                    "collapse_jax_old_metrics")
        sys.modules["collapse_jax.models.gaussian_fast"] = _load(
            rev, "collapse_jax/models/gaussian_fast.py", "collapse_jax_old_gaussian_fast")
        old = _load(rev, "collapse_jax/models/gaussian.py", "collapse_jax_old_gaussian")
        spec = model_registry.MODELS["gaussian"]
    finally:
        sys.modules.update(saved)
        model_registry.MODELS.clear()
        model_registry.MODELS.update(models)
        model_registry.SOURCES.clear()
        model_registry.SOURCES.update(sources)
    model_registry.MODELS[name] = dataclasses.replace(spec, name=name)
    return old


def normals_per_second(normal=jax.random.normal, repeats: int = 7) -> float:
    """Standard normals per second of ``normal`` on one flat array of 2^24 (median)."""
    m = 1 << 24
    f = jax.jit(lambda k: normal(k, (m,), jnp.float32))
    key = jax.random.key(0)
    jax.block_until_ready(f(key))
    return m / common.median_time(lambda: f(key), repeats)[0]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--old", required=True, help="git revision to compare against")
    p.add_argument("--regimes", default="replace,accumulate")
    p.add_argument("--chains", type=int, default=10000)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--d", type=int, default=10)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--generations", type=int, default=51)
    p.add_argument("--generation-chunk", type=int, default=25)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--metrics", default="trace_ratio,mean_error,logdet_ratio",
                   help="comma-separated model metrics, or 'all'")
    p.add_argument("--sample-path", action="store_true", help="options.fast_path=False")
    args = p.parse_args()
    register_old(args.old)
    env = common.environment()
    metrics = () if args.metrics == "all" else tuple(args.metrics.split(","))
    rate = normals_per_second()
    rate_rng = normals_per_second(collapse_jax.rng.normal)
    floor = args.n * args.d / rate
    common.log(f"normals/s: jax.random {rate:.3g}, collapse_jax.rng {rate_rng:.3g}; sample floor "
               f"n d / jax.random rate = {floor * 1e6:.2f} us")
    hp = {"sigma": 1.0, "scale": 1.0}
    for regime in args.regimes.split(","):
        statics = {
            which: collapse_jax.StaticConfig(
                model=name, regime=regime, source="gaussian", n0=args.n, n=args.n, d=args.d,
                generations=args.generations, n_test=args.n_test, metrics=metrics,
                options=(("fast_path", not args.sample_path),))
            for which, name in (("old", "gaussian_old"), ("new", "gaussian"))
        }

        def run(which, statics=statics):
            return run_sweep(statics[which], jax.random.key(0), np.arange(args.chains), hp, {},
                             chunk_size=args.chains, generation_chunk=args.generation_chunk)

        compile_s = {w: run(w).compile_seconds for w in ("old", "new")}
        times = {"old": [], "new": []}
        for _ in range(args.repeats):
            for w in ("old", "new"):
                times[w].append(run(w).run_seconds)
        per = args.chains * args.generations
        med = {w: statistics.median(t) / per for w, t in times.items()}
        rec = {**env, "bench": "gaussian_old_vs_new", "old": args.old, "regime": regime,
               "fast_path": not args.sample_path, "chains": args.chains, "n": args.n,
               "d": args.d, "n_test": args.n_test, "generations": args.generations,
               "generation_chunk": args.generation_chunk, "metrics": args.metrics,
               "normals_per_s": rate, "rng_normals_per_s": rate_rng,
               "sample_floor_us": floor * 1e6,
               "compile_s": compile_s, "run_s": times,
               "us_per_chain_gen": {w: v * 1e6 for w, v in med.items()},
               "old_over_new": med["old"] / med["new"],
               "over_floor": {w: v / floor for w, v in med.items()},
               "loadavg_after": list(__import__("os").getloadavg()),
               "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        common.append_jsonl("bench_gaussian", rec)
        print(json.dumps({k: rec[k] for k in ("regime", "fast_path", "us_per_chain_gen",
                                              "old_over_new", "over_floor", "loadavg",
                                              "loadavg_after")}, default=float), flush=True)


if __name__ == "__main__":
    main()
