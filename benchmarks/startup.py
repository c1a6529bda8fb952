"""Start-up: seconds to import ``collapse_jax.cli`` (what every command pays before any work) and
its heaviest dependencies, each in a fresh interpreter, median of repeats.

    python benchmarks/startup.py [--repeats 7] [--with DIR ...]

``--with DIR`` (repeatable) also times the imports with ``DIR`` first on ``PYTHONPATH`` (e.g. a
``pip install --no-deps --target DIR ml_dtypes==0.7.0``), the variants interleaved round by round
so the machine's speed changes hit them alike. Prints a table and appends JSON lines to
``benchmarks/results/startup.jsonl``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from common import append_jsonl, environment

IMPORTS = ("ml_dtypes", "jax", "collapse_jax", "collapse_jax.cli")


def one(module: str, path: str | None) -> tuple[float, str]:
    """Wall seconds of ``python -c 'import numpy; import <module>'`` minus numpy's import, and
    the ml_dtypes version that process loaded."""
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH")) if p)
    code = ("import time, numpy; t = time.perf_counter(); import {m}; "
            "s = time.perf_counter() - t; import ml_dtypes; print(s, ml_dtypes.__version__)")
    out = subprocess.run([sys.executable, "-c", code.format(m=module)], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--with", dest="paths", action="append", default=[])
    args = parser.parse_args()
    variants = [None, *args.paths]
    times: dict[tuple, list[float]] = {}
    versions: dict[str | None, str] = {}
    for _ in range(args.repeats):
        for module in IMPORTS:
            for path in variants:
                seconds, versions[path] = one(module, path)
                times.setdefault((module, path), []).append(seconds)
    env = environment()
    print(f"{'import':<18}" + "".join(f"{'ml_dtypes ' + versions[p]:>20}" for p in variants))
    for module in IMPORTS:
        row = [statistics.median(times[(module, p)]) for p in variants]
        print(f"{module:<18}" + "".join(f"{t:>19.3f}s" for t in row))
        for path, t in zip(variants, row, strict=True):
            append_jsonl("startup", {
                "import": module, "ml_dtypes": versions[path], "median_s": round(t, 4),
                "runs": [round(x, 4) for x in times[(module, path)]], "env": env,
                "when": time.strftime("%Y-%m-%d %H:%M")})


if __name__ == "__main__":
    main()
