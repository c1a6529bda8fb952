"""The issue's targets, end to end: the CLI on 10,000 seeds vs the numpy baseline, and 1e5 chains.

1. ``collapse-jax run configs/gaussian.py --set seeds=10000 --set regime=R --set n=10,32,100``
   for R in replace, accumulate, accumulate_subsample (process start, compile, run, writing
   results and figures included), timed as a subprocess.
2. The baseline on ``--baseline-seeds`` seeds per n, each a subprocess run as users have it
   (``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``), scaled linearly to 10,000 seeds.
3. The floor of each sweep: standard normals drawn (real data, test data and n d per generation)
   divided by the measured normals per second.
4. ``--big``: 1e5 sample-path Gaussian chains (d = 10, n = 100) x 100 generations via run_sweep,
   against the floor (chunks of ``--big-chunk`` chains; ``--big-chains`` to run fewer and scale),
   once per metric set of ``--big-metrics`` (the baseline's three metrics, then all five).

    python benchmarks/targets.py [--big] [--seeds 10000] [--baseline-seeds 100]

Appends to results/targets.jsonl and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import common
import floors
import numpy as np

ROOT = common.HERE.parent
NS = (10, 32, 100)


def cli(regime: str, seeds: int, generations: int, out: str, metrics: str,
        cache_dir: str = "off") -> dict:
    """Time the CLI as a subprocess; ``cache_dir``: its persistent compilation cache (``off``,
    or a directory: empty = a cold run, filled by an earlier run = a warm one)."""
    cmd = ["collapse-jax", "run", str(ROOT / "configs" / "gaussian.py"), "--set",
           f"seeds={seeds}", "--set", f"regime={regime}", "--set",
           "n=" + ",".join(map(str, NS)), "--set", f"generations={generations}",
           "--out", out, "--quiet"]
    if metrics:
        cmd += ["--set", f"metrics={metrics}"]
    exe = os.path.join(os.path.dirname(sys.executable), "collapse-jax")
    cmd[0] = exe if os.path.exists(exe) else cmd[0]
    env = {**os.environ, "COLLAPSE_JAX_CACHE_DIR": cache_dir}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    wall = time.perf_counter() - t0
    lines = proc.stdout.strip().splitlines()
    last = lines[-1] if lines else ""
    return {"cmd": " ".join(cmd[1:]), "wall_s": wall, "cli_summary": last}


def previous_baseline(regime: str, args) -> dict | None:
    """The latest baseline timing of ``regime`` at the same sizes in results/targets.jsonl."""
    path = common.HERE / "results" / "targets.jsonl"
    found = None
    for line in path.read_text().splitlines() if path.exists() else []:
        rec = json.loads(line)
        b = rec.get("baseline")
        if (rec.get("regime") == regime and b and rec.get("generations", args.generations)
                == args.generations and len(b.get("per_n", {})) == len(NS)):
            found = {**b, "reused_from": rec.get("time")}
    return found


def baseline(regime: str, seeds: int, generations: int) -> dict:
    env = common.baseline_env("user")
    total, per_n = 0.0, {}
    for n in NS:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, str(common.HERE / "baseline_numpy.py"), "gaussian",
                              regime, str(n), str(seeds)], capture_output=True, text=True,
                             check=True, env=env).stdout
        per_n[n] = {"wall_s": time.perf_counter() - t0, **json.loads(out)}
        total += per_n[n]["wall_s"]
    return {"wall_s": total, "per_n": per_n}


def sweep_floor(f: dict, seeds: int, generations: int, d: int = 10, n_test: int = 200) -> float:
    normals = sum(seeds * d * (n + n_test + (generations - 1) * n) for n in NS)
    return normals / f["normals_per_s"]


def big(f: dict, chains: int, total: int, chunk: int, generations: int = 100,
        metrics: tuple[str, ...] = ()) -> dict:
    import jax

    import collapse_jax as cj
    from collapse_jax.sweep import run_sweep

    static = cj.StaticConfig(model="gaussian", regime="replace", n0=100, n=100, d=10,
                             generations=generations, n_test=200,
                             metrics=metrics, options=(("fast_path", False),))
    res = run_sweep(static, jax.random.key(0), np.arange(chains),
                    {"sigma": 1.0, "scale": 1.0}, {}, chunk_size=min(chunk, chains))
    scale = total / chains
    fl = floors.gaussian_floor(f, 100, 10, 100, total, generations)
    normals_floor = total * 10 * (100 + 200 + (generations - 1) * 100) / f["normals_per_s"]
    return {"chains_run": chains, "chains": total, "metrics": ",".join(metrics) or "all",
            "compile_s": res.compile_seconds,
            "run_s_measured": res.run_seconds, "run_s": res.run_seconds * scale,
            "floor_normals_s": normals_floor, "floor_roofline_s": fl["seconds"],
            "ratio_to_floor": res.run_seconds * scale / max(normals_floor, fl["seconds"]),
            "peak_rss_mb": common.peak_rss_mb()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=10000)
    p.add_argument("--baseline-seeds", type=int, default=100)
    p.add_argument("--generations", type=int, default=100)
    p.add_argument("--regimes", default="replace,accumulate,accumulate_subsample")
    p.add_argument("--big", action="store_true")
    p.add_argument("--reuse-baseline", action="store_true",
                   help="use the latest baseline timing in results/targets.jsonl (same sizes)")
    p.add_argument("--big-chains", type=int, default=100000)
    p.add_argument("--big-chunk", type=int, default=10000)
    p.add_argument("--big-metrics", default="trace_ratio,mean_error,logdet_ratio;",
                   help="';'-separated metric sets of the 1e5-chain run, each a comma list "
                        "('' = all five): by default the baseline's three, then all five")
    p.add_argument("--metrics", default="trace_ratio,mean_error,logdet_ratio",
                   help="metrics the CLI computes ('' = all five); the default is what the "
                        "numpy baseline computes")
    args = p.parse_args()
    env = common.environment()
    f = floors.measure()
    common.log("floors:", f)
    rows = []
    for regime in args.regimes.split(","):
        with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as cache:
            c = cli(regime, args.seeds, args.generations, out + "/cold", args.metrics, cache)
            warm = cli(regime, args.seeds, args.generations, out + "/warm", args.metrics, cache)
        b = previous_baseline(regime, args) if args.reuse_baseline else None
        if b is None:
            b = baseline(regime, args.baseline_seeds, args.generations)
        base_all = b["wall_s"] * args.seeds / args.baseline_seeds
        floor = sweep_floor(f, args.seeds, args.generations)
        row = {"regime": regime, "metrics": args.metrics or "all", "seeds": args.seeds,
               "cli_wall_s": c["wall_s"], "cli_warm_cache_s": warm["wall_s"],
               "baseline_s": base_all, "speedup": base_all / c["wall_s"],
               "speedup_warm": base_all / warm["wall_s"], "floor_s": floor,
               "cli_over_floor": c["wall_s"] / floor, "cli": c, "cli_warm": warm, "baseline": b,
               "loadavg_after": os.getloadavg()}
        common.append_jsonl("targets", {**env, **f, **row})
        common.log(json.dumps(row, default=float))
        rows.append(row)
    cols = ["regime", "metrics", "seeds", "cli_wall_s", "cli_warm_cache_s", "baseline_s",
            "speedup", "speedup_warm", "floor_s", "cli_over_floor"]
    print(common.table(rows, cols, {k: ".3g" for k in cols[3:]}))
    if args.big:
        for metrics in args.big_metrics.split(";"):
            r = big(f, args.big_chains, 100000, args.big_chunk, args.generations,
                    tuple(m for m in metrics.split(",") if m))
            common.append_jsonl("targets", {**env, **f, "big": r})
            print(json.dumps(r, indent=1, default=float), flush=True)


if __name__ == "__main__":
    main()
