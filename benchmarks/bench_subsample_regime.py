"""``accumulate_subsample`` against ``accumulate`` per chain-generation (the Gaussian of the
10,000-seed sweep: d = 10, 100 generations, metrics trace_ratio, mean_error, logdet_ratio).

Three chains per n, each ``run_sweep`` with the plan's automatic batch (the CPU batch cap)
(``common.timed_sweep``), timed as the median of ``--repeats`` calls after a compiling call:

- ``accumulate``, the default exact fast path (a pool of sufficient statistics: O(d^2) random
  numbers per generation whatever n);
- ``accumulate`` on the points (``fast_path=False``: the pool keeps every row, each fit is over
  the whole pool);
- ``accumulate_subsample`` (the pool keeps every row, each fit sees m = n0 of them): it must
  draw its n x d normals per generation.

    python benchmarks/bench_subsample_regime.py --seeds 2000 --n 10,32,100

Appends JSON lines to results/subsample_regime.jsonl and prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics

import common
import numpy as np

import collapse_jax as cj

METRICS = ("trace_ratio", "mean_error", "logdet_ratio")
CASES = (("accumulate", True), ("accumulate", False), ("accumulate_subsample", True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2000)
    p.add_argument("--generations", type=int, default=100)
    p.add_argument("--n", default="10,32,100")
    p.add_argument("--d", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    env, rows = common.environment(), []
    ids = np.arange(a.seeds)
    hp = common.hparams("gaussian")
    for n in (int(x) for x in a.n.split(",")):
        for regime, fast in CASES:
            static = cj.StaticConfig(model="gaussian", regime=regime, n0=n, n=n, d=a.d,
                                     generations=a.generations, n_test=100, metrics=METRICS,
                                     options=(("fast_path", fast),))
            common.timed_sweep(static, 0, ids, hp)  # compiles
            calls = [common.timed_sweep(static, r + 1, ids, hp) for r in range(a.repeats)]
            times = [c["wall_s"] for c in calls]
            med = statistics.median(times)
            row = {"n": n, "regime": regime, "fast_path": fast,
                   "chunk_size": calls[0]["chunk_size"], "seconds": med, "times": times,
                   "us_per_chain_generation": med / (a.seeds * a.generations) * 1e6}
            rows.append(row)
            common.log(row)
            common.append_jsonl("subsample_regime", {**row, "seeds": a.seeds, "d": a.d,
                                                     "generations": a.generations, "env": env})
    for r in rows:
        base = next(x for x in rows if x["n"] == r["n"] and x["regime"] == "accumulate"
                    and x["fast_path"])
        r["vs_fast_accumulate"] = r["us_per_chain_generation"] / base["us_per_chain_generation"]
    print(common.table(rows, ["n", "regime", "fast_path", "chunk_size", "us_per_chain_generation",
                              "vs_fast_accumulate"],
                       {"us_per_chain_generation": ".1f", "vs_fast_accumulate": ".2f"}))


if __name__ == "__main__":
    main()
