"""The 10,000-seed Gaussian sweep of issue 19 end to end, its wall time split into phases.

    python benchmarks/sweep_10k.py --old ../old-checkout --rounds 2 --baseline-seeds 100

Runs ``collapse-jax run configs/gaussian.py --set d=10 --set seeds=10000 --set generations=100
--set metrics=trace_ratio,mean_error,logdet_ratio`` (n = 10, 32, 100; replace, accumulate,
accumulate_subsample; 9M rows) as a fresh process per run, cold (an empty persistent compilation
cache) then warm (the cache the cold run filled), in this checkout and, with ``--old``, in another
one, interleaved (old, new, old, new). Each run's progress lines on stderr are time-stamped as
they arrive, which splits the wall time into:

- ``start``: process start to the first "compiling" line (imports, config, planning);
- ``first_compile``: the first group's programs (``run.log``'s first "compiled in");
- ``chains``: from there to the "done" line (every group's chains, the other groups compiling
  meanwhile, the Parquet parts written on the way);
- ``after``: to the process's exit, which the CLI's last line splits (where it reports them) into
  ``table`` (the last parts, assembling the rows), ``writing`` (summary, config, CSV when small)
  and ``figures`` (the figures and the data-volume analysis).

``--baseline-seeds K`` times the numpy loop structure of the Collapse-or-Thrive code
(``baseline_numpy.py``, the user's BLAS) on K seeds of each (regime, n), scaled to the sweep's
seeds, in the same session, so the speed-ups compare runs of one phase of the machine.
Appends JSON lines to results/sweep_10k.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common

HERE = Path(__file__).resolve().parents[1]
SETS = ("d=10", "generations=100", "metrics=trace_ratio,mean_error,logdet_ratio")
REGIMES = ("replace", "accumulate", "accumulate_subsample")
NS = (10, 32, 100)
LAST = re.compile(r"\((?P<body>compile [^)]*)\)\s*$")


def timed_run(tree: Path, seeds: int, out: Path, cache: Path) -> dict:
    """One CLI run of ``tree``'s code: phase seconds from its time-stamped stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAPSE_JAX_")}
    env.update(PYTHONPATH=str(tree), COLLAPSE_JAX_CACHE_DIR=str(cache))
    cmd = [sys.executable, "-m", "collapse_jax.cli", "run", "configs/gaussian.py",
           *[a for s in (*SETS, f"seeds={seeds}") for a in ("--set", s)], "--out", str(out),
           "--overwrite"]
    stamps: dict[str, float] = {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)

    def watch():
        for line in proc.stderr:
            now = time.perf_counter() - t0
            for name, mark in (("compiling", "compiling 1/"), ("done", "done |")):
                if mark in line and name not in stamps:
                    stamps[name] = now

    reader = threading.Thread(target=watch)
    reader.start()
    stdout = proc.stdout.read()
    proc.wait()
    reader.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{tree}: exit {proc.returncode}\n{stdout[-2000:]}")
    # the first group's compile as the run logged it (stderr that is not a terminal gets no
    # per-chunk lines)
    log = (out / "run.log").read_text()  # appended to by every run into ``out``: the last one
    first = float(re.search(r"compiled in (\S+) s", log[log.rindex("compiling 1/"):])[1])
    rec = {"wall_s": wall, "start_s": stamps["compiling"], "first_compile_s": first,
           "chains_s": stamps["done"] - stamps["compiling"] - first,
           "after_s": wall - stamps["done"]}
    found = LAST.search(stdout.strip().splitlines()[-1])
    if found:
        for part in found["body"].split(","):
            name, value = part.split()[:2]
            rec[f"cli_{name}_s"] = float(value)
    return rec


def baseline(seeds: int, scale_to: int) -> float:
    """Seconds of the numpy loop structure for the whole sweep (``seeds`` per (regime, n),
    scaled to ``scale_to``)."""
    env = common.baseline_env()
    total = 0.0
    for regime in REGIMES:
        for n in NS:
            out = subprocess.run([sys.executable, str(HERE / "benchmarks" / "baseline_numpy.py"),
                                  "gaussian", regime, str(n), str(seeds)], env=env, check=True,
                                 capture_output=True, text=True).stdout
            total += json.loads(out.strip().splitlines()[-1])["seconds"]
    return total * scale_to / seeds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", type=Path, help="another checkout, run interleaved with this one")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--seeds", type=int, default=10000)
    p.add_argument("--baseline-seeds", type=int, default=0,
                   help="seeds per (regime, n) of the numpy baseline (0: skip it)")
    a = p.parse_args()
    trees = {"new": HERE} if a.old is None else {"old": a.old.resolve(), "new": HERE}
    env, rows = common.environment(), []
    base = baseline(a.baseline_seeds, a.seeds) if a.baseline_seeds else None
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for which, tree in trees.items():
                cache = Path(tmp) / f"cache-{which}-{r}"
                for state in ("cold", "warm"):
                    rec = {"tree": which, "round": r, "cache": state,
                           **timed_run(tree, a.seeds, Path(tmp) / "out", cache)}
                    if base:
                        rec["baseline_s"], rec["speedup"] = base, base / rec["wall_s"]
                    rows.append(rec)
                    common.log(rec)
                    common.append_jsonl("sweep_10k", {**rec, "seeds": a.seeds, "env": env})
    cols = ["tree", "round", "cache", "wall_s", "start_s", "first_compile_s", "chains_s",
            "after_s", "cli_table_s", "cli_writing_s", "cli_figures_s"] + (
        ["speedup"] if base else [])
    print(common.table(rows, cols, {c: ".1f" for c in cols[3:]}))


if __name__ == "__main__":
    main()
