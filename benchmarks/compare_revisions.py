"""Two checkouts of collapse_jax side by side: the same workloads, runs interleaved (A B A B ...).

For an engine change, where both revisions must run their own code end to end: each run is a
fresh process with ``PYTHONPATH`` set to one checkout, so only the APIs both revisions share are
used (``StaticConfig``, ``run_sweep`` and its ``SweepResult``, the ``collapse-jax run`` CLI).

Workloads:
- ``sweep``: ``run_sweep`` of the Gaussian (fast path, d = 10, n = 100, ``--metrics``, by default
  trace_ratio, mean_error, logdet_ratio) under ``replace`` and ``accumulate``, 10,000 chains x 51
  generations in one batch: compile seconds and steady-state run seconds of a second call in the
  same process.
- ``cli``: ``collapse-jax run configs/gaussian.py`` at 10,000 seeds, n = 100, d = 10, 50
  generations, the same metrics, with ``--out`` (parts, checkpoints, table, figures),
  persistent compilation cache off: whole-process wall seconds.

    python benchmarks/compare_revisions.py --old /path/to/old/checkout --new . --repeats 5

Prints the medians and the median of the per-pair ratios old / new, and appends them to
results/compare_revisions.jsonl. On a shared machine only the paired ratios mean much.
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

import common

SWEEP = """
import json, sys, time, jax, numpy as np
import collapse_jax as cj
metrics = tuple(m for m in sys.argv[1].split(",") if m)
out = {}
for regime in ("replace", "accumulate"):
    static = cj.StaticConfig(model="gaussian", regime=regime, n0=100, n=100, d=10,
                             generations=51, n_test=100, metrics=metrics)
    args = dict(chunk_size=10000, generation_chunk=25)
    hp = {"sigma": 1.0, "scale": 1.0}
    first = cj.run_sweep(static, jax.random.key(0), np.arange(10000), hp, {}, **args)
    second = cj.run_sweep(static, jax.random.key(1), np.arange(10000), hp, {}, **args)
    out[regime] = {"compile_s": first.compile_seconds, "run_s": second.run_seconds}
print("RESULT " + json.dumps(out))
"""


def _env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAPSE_JAX_")}
    env.update(PYTHONPATH=str(tree), COLLAPSE_JAX_CACHE_DIR="off")
    return env


def run_sweep_workload(tree: Path, metrics: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", SWEEP, metrics], env=_env(tree), cwd=tree,
                          check=True, capture_output=True, text=True)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def run_cli_workload(tree: Path, regime: str, metrics: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "collapse_jax.cli", "run", "configs/gaussian.py",
                        "--set", "seeds=10000", "--set", "n=100", "--set", "d=10",
                        "--set", "generations=50", "--set", f"regime={regime}",
                        *(["--set", f"metrics={metrics}"] if metrics else []),
                        "--out", out, "--quiet"], env=_env(tree), cwd=tree, check=True,
                       capture_output=True, text=True)
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--old", required=True, type=Path, help="checkout of the old revision")
    p.add_argument("--new", default=Path(__file__).resolve().parents[1], type=Path)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workloads", default="sweep,cli")
    p.add_argument("--metrics", default="trace_ratio,mean_error,logdet_ratio",
                   help="model metrics computed ('' = all five)")
    args = p.parse_args()
    env = common.environment()
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    samples: dict[str, dict[str, list[float]]] = {}
    for i in range(args.repeats):
        order = ("old", "new") if i % 2 == 0 else ("new", "old")
        for which in order:
            if "sweep" in args.workloads:
                for regime, rec in run_sweep_workload(trees[which], args.metrics).items():
                    for k, v in rec.items():
                        samples.setdefault(f"sweep {regime} {k}", {}).setdefault(
                            which, []).append(v)
            if "cli" in args.workloads:
                for regime in ("replace", "accumulate"):
                    samples.setdefault(f"cli {regime} wall_s", {}).setdefault(which, []).append(
                        run_cli_workload(trees[which], regime, args.metrics))
        common.log(f"round {i + 1}/{args.repeats} done")
    rows = {}
    for name, by in samples.items():
        ratios = [a / b for a, b in zip(by["old"], by["new"], strict=True)]
        rows[name] = {"old_median": statistics.median(by["old"]),
                      "new_median": statistics.median(by["new"]),
                      "old_over_new_median": statistics.median(ratios),
                      "old_over_new_min": min(ratios), "old_over_new_max": max(ratios)}
        print(f"{name:32s} old {rows[name]['old_median']:8.3f}  new {rows[name]['new_median']:8.3f}"
              f"  old/new {rows[name]['old_over_new_median']:.3f} "
              f"[{rows[name]['old_over_new_min']:.3f}, {rows[name]['old_over_new_max']:.3f}]")
    common.append_jsonl("compare_revisions", {**env, "old": str(trees["old"]),
                                              "new": str(trees["new"]),
                                              "repeats": args.repeats, "rows": rows,
                                              "metrics": args.metrics,
                                              "samples": samples,
                                              "loadavg_after": list(os.getloadavg())})


if __name__ == "__main__":
    main()
