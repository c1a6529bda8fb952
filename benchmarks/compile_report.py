"""Compile time: per program (size and seconds) and per config (compile vs run, cold and warm).

    python benchmarks/compile_report.py programs            # every family at its contract sizes
    python benchmarks/compile_report.py configs linear_regression gaussian --old ../old-checkout

``programs``: for each family, the ``init`` and ``advance`` programs of 2 chains under
``replace`` at the family's contract sizes: their size (``programs.program_size``, the measure
``tests/test_programs.py`` budgets), tracing + lowering seconds and XLA compile seconds.

``configs``: each config through ``collapse-jax run`` twice in a fresh persistent compilation
cache (cold, then warm), as a fresh process each time: wall seconds, and the compile and run
seconds ``summary.json`` reports (its ``timing``), so the share of the wall time spent
compiling. ``--set`` overrides apply to every config (e.g. ``--set seeds=8``). With ``--old`` the
same runs are made in that checkout too, interleaved with this one's (old, new, old, new).

Appends JSON lines to results/compile_report.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

HERE = Path(__file__).resolve().parents[1]


def programs_report() -> None:
    import collapse_jax as cj
    from collapse_jax.programs import program_jaxprs, program_size
    from collapse_jax.validate import statics

    for model in sorted(cj.MODELS):
        ex = dict(cj.MODELS[model].example)
        options = ex.pop("options", {})
        static = statics(cj.Experiment(name="report", model=model, regimes=("replace",), seeds=2,
                                       generations=3, options=options, **ex))[0]
        args = cj.make_source(static).load(static)
        t0 = time.perf_counter()
        jaxprs = program_jaxprs(static, args)
        trace_s = time.perf_counter() - t0
        rec = {"model": model, "trace_s": trace_s}
        from collapse_jax import programs as P

        for name, jaxpr in jaxprs.items():
            rec[f"{name}_size"] = program_size(jaxpr)
        low = P.lower_programs(static, args)
        for name, lowered in low.items():
            t0 = time.perf_counter()
            lowered.compile()
            rec[f"{name}_compile_s"] = time.perf_counter() - t0
        P.clear_caches()
        common.append_jsonl("compile_report", {**common.environment(), "kind": "program", **rec})
        print(json.dumps(rec, default=lambda v: round(v, 2)), flush=True)


def _cli(tree: Path, config: str, sets: list[str], out: Path, cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAPSE_JAX_")}
    env.update(PYTHONPATH=str(tree), COLLAPSE_JAX_CACHE_DIR=str(cache))
    cmd = [sys.executable, "-m", "collapse_jax.cli", "run", f"configs/{config}.py",
           *[a for s in sets for a in ("--set", s)], "--out", str(out), "--quiet", "--overwrite"]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=tree, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    timing = json.loads((out / "summary.json").read_text())["timing"]
    compile_s = sum(g["compile_seconds"] for g in timing)
    run_s = sum(g["run_seconds"] for g in timing)
    return {"wall_s": wall, "compile_s": compile_s, "run_s": run_s,
            "compile_share": compile_s / wall, "programs": 2 * len(timing)}


def configs_report(names: list[str], sets: list[str], old: Path | None) -> None:
    trees = {"new": HERE} if old is None else {"old": old.resolve(), "new": HERE}
    for config in names:
        rec = {"config": config, "sets": sets}
        with tempfile.TemporaryDirectory() as tmp:
            for which, tree in trees.items():
                cache, out = Path(tmp) / f"cache-{which}", Path(tmp) / f"out-{which}"
                rec[which] = {"cold": _cli(tree, config, sets, out, cache),
                              "warm": _cli(tree, config, sets, out, cache)}
        common.append_jsonl("compile_report", {**common.environment(), "kind": "config", **rec})
        print(json.dumps(rec, default=lambda v: round(v, 2)), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=("programs", "configs"))
    p.add_argument("names", nargs="*", help="configs (default: every classical config)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--old", type=Path, help="another checkout, run interleaved with this one")
    args = p.parse_args()
    if args.what == "programs":
        programs_report()
    else:
        names = args.names or ["linear_regression", "gaussian", "kde", "gmm", "categorical",
                               "mixing", "fresh_mixing", "sampling_bias"]
        configs_report(names, args.set, args.old)


if __name__ == "__main__":
    main()
