"""Throughput (chain-generations per second) vs number of chains and vs n, against the floor.

Cases: the Gaussian with the sample path (``fast_path=False``: n d normals per generation) and
with the exact fast path (the default), linear regression and the KDE, in the settings and with
the metrics of ``bench_sweeps.FAMILIES`` (Gaussian d = 10, linear regression d = 32, KDE 2-D
moons with h = 0.1), regime ``--regime`` (default ``replace``).

- vs chains: ``--chains`` (1 .. 1e5) at n = ``--n``;
- vs n: ``--ns`` at ``--n-chains`` chains for the ``--n-cases`` (linear regression only n >= d).

Each point runs ``G = clip(--chain-gens / chains, --min-generations, --generations)``
generations (fewer for huge chain counts), through ``run_sweep`` with its plan within
``--memory-gb`` GiB (it splits the chains into chunks when they do not fit). Compile is timed
apart (the first call); the steady state is the median wall time of ``--repeats`` further calls
(other root keys). Throughput = chains x G / steady seconds: it includes generation 0 (drawing
the chain's real and test data, the first fit) and every per-call cost (planning, dispatch,
fetching the metrics).

Roofline floor of the Gaussian chain (``floors.gaussian_floor``), per chain-generation of the
sample path, d = dimension, n = points sampled, r = pool rows the fit reads (n under
``replace``; the mean valid pool, n (G + 1) / 2, under ``accumulate``):

    random numbers  n d standard normals (sampling)
    flops           2 n d^2 (sampling: z @ root, n d^2 multiply-adds)
                  + 2 r d^2 (the fit's scatter, r d^2 multiply-adds)
    bytes           4 (n d + r d)   (float32: the samples written, the pool rows read)
    floor           max(normals / normals_per_s + flops / matmul_rate, bytes / copy_bandwidth)

with the rates of ``floors.measure`` (jax.random.normal, a batch of ``[n, d] @ [d, d]`` matmuls
of this n, ``x + 1`` over 16 MiB), probed in every repeat interleaved with the chain calls (the
medians are used), so the ratio measured / floor is taken under the same load. A call's floor
adds ``n_test d`` normals per chain (the test set drawn in generation 0). The O(d^3)
eigendecompositions and the metrics are left out: the floor is a lower bound. The fast path
draws O(d^2) numbers per generation, so it can run below this floor; it is plotted against the
same line.

    python benchmarks/scaling.py                  # the full run
    python benchmarks/scaling.py --quick          # a smoke run, ~2-3 min loaded

Appends one JSON line per point to benchmarks/results/scaling.jsonl, prints a table and writes
benchmarks/results/scaling.png (throughput vs chains and vs n, log-log, floor as a line).
"""

from __future__ import annotations

import argparse
import os
import statistics

import common
import floors
import numpy as np
from bench_sweeps import FAMILIES, static_for

#: case -> (family, fast_path option or None)
CASES = {
    "gaussian/sample": ("gaussian", False),
    "gaussian/fast": ("gaussian", True),
    "linear_regression": ("linear_regression", None),
    "kde": ("kde", None),
}

QUICK = {"chains": "10,1000", "ns": "10,100", "n_chains": 10, "n_cases": "gaussian/sample",
         "generations": 20, "chain_gens": 5_000, "min_generations": 5, "repeats": 5}


def generations_for(chains: int, args) -> int:
    return int(np.clip(args.chain_gens // chains, args.min_generations, args.generations))


def floor_of(case: str, f: dict, n: int, d: int, n_test: int, chains: int, g: int,
             regime: str) -> dict | None:
    """Floor of one call (``chains`` x ``g`` generations) of a Gaussian case, else None."""
    if not case.startswith("gaussian"):
        return None
    rows = n if regime == "replace" else n * (g + 1) // 2
    fl = floors.gaussian_floor(f, n, d, rows, chains, g)
    test_s = chains * n_test * d / f["normals_per_s"]
    return {**fl, "pool_rows": rows, "seconds": fl["seconds"] + test_s}


def point(case: str, n: int, chains: int, args) -> dict:
    family, fast = CASES[case]
    fam = FAMILIES[family]
    g = generations_for(chains, args)
    static = static_for(family, args.regime, n, g, fast)
    hp = common.hparams(family, **fam["hparams"])
    plan = common.plan(static, chains, args.memory_gb)
    ids = np.arange(chains)
    load_before = os.getloadavg()
    first = common.timed_sweep(static, 0, ids, hp, plan)
    first.pop("metrics")
    fns = {"chain": lambda r: {k: v for k, v in common.timed_sweep(static, r + 1, ids, hp, plan)
                               .items() if k != "metrics"}}
    if family == "gaussian":  # the floor's rates, probed under the same load
        fns["floor"] = lambda r: floors.measure(3, n=n, d=fam["d"], size=1 << 22)
    reps = common.interleave(fns, args.repeats)
    steady = statistics.median(x["wall_s"] for x in reps["chain"])
    rates = {k: statistics.median(x[k] for x in reps["floor"]) for k in reps["floor"][0]} \
        if "floor" in reps else None
    fl = floor_of(case, rates, n, fam["d"], fam["n_test"], chains, g, args.regime)
    row = {
        "case": case, "family": family, "regime": args.regime, "n": n, "d": fam["d"],
        "chains": chains, "generations": g, "n_test": fam["n_test"],
        "options": dict(static.options), "metrics": list(static.metrics),
        "chunk_size": first["chunk_size"], "chain_chunks": plan.n_chunks,
        "compile_s": first["compile_s"], "first_wall_s": first["wall_s"], "steady_s": steady,
        "steady_all_s": [x["wall_s"] for x in reps["chain"]],
        "run_all_s": [x["run_s"] for x in reps["chain"]],
        "chain_gens_per_s": chains * g / steady, "us_per_chain_gen": 1e6 * steady / (chains * g),
        "rates": rates, "rates_all": reps.get("floor"),
        "floor_s": fl["seconds"] if fl else None,
        "floor_chain_gens_per_s": chains * g / fl["seconds"] if fl else None,
        "measured_over_floor": steady / fl["seconds"] if fl else None,
        "floor_counts": fl, "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "peak_rss_mb": common.peak_rss_mb(), "memory_gb": args.memory_gb, "quick": args.quick,
    }
    common.log(f"{case} n={n} chains={chains} G={g}: compile {row['compile_s']:.2f} s, "
               f"steady {steady:.3g} s, {row['chain_gens_per_s']:.3g} chain-gens/s"
               + (f", {row['measured_over_floor']:.3g}x floor" if fl else ""))
    return row


def plot(rows: list[dict], args) -> None:
    plt = common.pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for case in CASES:
        by_c = sorted((r for r in rows if r["case"] == case and r["n"] == args.n),
                      key=lambda r: r["chains"])
        by_n = sorted((r for r in rows if r["case"] == case and r["chains"] == args.n_chains),
                      key=lambda r: r["n"])
        for ax, rs, x in ((a1, by_c, "chains"), (a2, by_n, "n")):
            if not rs:
                continue
            (line,) = ax.plot([r[x] for r in rs], [r["chain_gens_per_s"] for r in rs], "o-",
                              label=case)
            if case == "gaussian/sample":
                ax.plot([r[x] for r in rs], [r["floor_chain_gens_per_s"] for r in rs], "k--",
                        label="floor, Gaussian sample path")
    load = rows[0]["loadavg_before"][0] if rows else float("nan")
    tag = f"{args.regime}{' (quick)' if args.quick else ''}, load {load:.1f}"
    a1.set(xscale="log", yscale="log", xlabel="chains", ylabel="chain-generations / s",
           title=f"vs chains: n = {args.n}, {tag}")
    a2.set(xscale="log", yscale="log", xlabel="n per generation",
           ylabel="chain-generations / s", title=f"vs n: {args.n_chains} chains, {tag}")
    for ax in (a1, a2):
        ax.legend(fontsize=7)
    common.savefig(fig, "scaling")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--regime", default="replace")
    p.add_argument("--chains", default="1,10,100,1000,10000,100000")
    p.add_argument("--n", type=int, default=100, help="n of the chains sweep")
    p.add_argument("--ns", default="10,32,100,316,1000")
    p.add_argument("--n-chains", type=int, default=1000, help="chains of the n sweep")
    p.add_argument("--n-cases", default=",".join(CASES), help="cases of the n sweep")
    p.add_argument("--generations", type=int, default=100, help="most generations per point")
    p.add_argument("--min-generations", type=int, default=10)
    p.add_argument("--chain-gens", type=int, default=200_000,
                   help="chain-generations per call aimed at (G = this / chains, clipped)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--memory-gb", type=float, default=4.0, help="run_sweep plan budget (GiB)")
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    args = p.parse_args()
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    env = common.environment()
    common.log("environment:", env)
    todo = []
    for case in args.cases.split(","):
        d = FAMILIES[CASES[case][0]]["d"]
        todo += [(case, args.n, int(c)) for c in args.chains.split(",")]
        if case in args.n_cases.split(","):
            todo += [(case, int(n), args.n_chains) for n in args.ns.split(",")
                     if int(n) >= d or CASES[case][0] != "linear_regression"]
    rows = []
    for case, n, chains in dict.fromkeys(todo):  # in order, without repeats
        rows.append(point(case, n, chains, args))
        common.append_jsonl("scaling", {**env, **rows[-1]})
    cols = ["case", "n", "chains", "generations", "chunk_size", "compile_s", "steady_s",
            "chain_gens_per_s", "us_per_chain_gen", "floor_chain_gens_per_s",
            "measured_over_floor", "peak_rss_mb"]
    print(f"load average at start {env['loadavg']}, at end {os.getloadavg()}")
    print(common.table(rows, cols, {c: ".3g" for c in cols[5:]}))
    plot(rows, args)


if __name__ == "__main__":
    main()
