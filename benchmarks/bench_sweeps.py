"""collapse_jax vs the numpy baseline on the papers' sweeps, side by side in one process.

For each family, regime and n, ``--seeds`` seeds x ``--generations`` generations:

- collapse_jax through ``run_sweep`` (restricted to the metrics the baseline computes, see
  ``Experiment.metrics``): the first call's wall time (planning, compile, run, fetching the
  metrics; the compile seconds are reported apart) and the steady state, the median wall time of
  ``--repeats`` further calls (other root keys: no recompile). The Gaussian's ``replace`` and
  ``accumulate`` are run twice, with the exact fast path (the default, ``fast_path=True``: the
  fitted statistics are drawn directly) and with the sample path (``fast_path=False``: n d
  normals per generation, as the baseline), so like is compared with like; so are linear
  regression's (fast: a pool of summed ``X^T X``, ``X^T y``; sample: the pool of rows).
- the numpy baseline (``baseline_numpy.py``: one seed at a time, a Python loop over
  generations, ``np.concatenate``, ``np.random.multivariate_normal``) in a subprocess started with
  ``--baseline-env`` (``user``: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``, what users have;
  ``inherit``: this process's environment); recorded in every line). Each repeat runs new seeds
  until ``--budget`` seconds (at least ``--min-seeds``) and is scaled to ``--seeds`` seeds.

Repeats are interleaved (collapse_jax fast, collapse_jax sample, numpy, then again), so a change
of load hits every side alike; speed-ups are ``numpy seconds / collapse_jax seconds`` (> 1:
collapse_jax is faster), medians over the repeats; "incl. compile" divides by the first call.

Statistical agreement, per metric at the last generation: ``|mean_jax - mean_np| <= 4 sqrt(se_jax^2
+ se_np^2)`` over all the seeds each side ran (the first call and every repeat). Compared on
``log`` values for the Gaussian ``trace_ratio`` and ``mean_error`` (heavy right tails under
``replace``: at n = 32, g = 99 the mean error's median is 5.6 and its mean 9.6, set by a few
chains) and on plain values otherwise. The Gaussian ``logdet_ratio`` is checked only where both
sides can resolve it: ``n > d`` (a covariance of <= d points is singular: numpy's ``slogdet``
returns rounding noise or -inf, collapse_jax floors the eigenvalues) and a covariance whose
eigenvalues fit the precision, i.e. the baseline's median of ``log(arithmetic / geometric mean
eigenvalue) = log(trace_ratio) - logdet_ratio / d`` (sigma = 1) is below ``LOGDET_GAP_MAX``.
Under ``replace`` at n = 32 the covariance at g = 99 spans ~18 e-folds: float32 points lose its
small eigenvalues (the sample path's log det is biased low) and even numpy's float64 is biased
high; the fast path, which carries a triangular root, matches the closed form. Skipped checks
are still reported (z and the reason) in the JSON lines.

Families (``FAMILIES``): the Gaussian sweep (d = 10, n in {10, 32, 100, 316, 1000}, sigma = 1),
linear regression (the Gerstgrasser et al. setting of configs/linear_regression.py: d = 32,
T = n in {100, 316, 1000}, sigma = 10) and the KDE moons sweep (h = 0.1, noise 0.05, 100 test
points, n in {10, 100, 1000}; its steady repeats run ``--kde-steady-seeds`` chains, the first call
runs all seeds in chunks of that size, one compiled program for both).

    python benchmarks/bench_sweeps.py                           # the full sweep
    python benchmarks/bench_sweeps.py --quick                   # a smoke run, ~2-3 min loaded
    python benchmarks/bench_sweeps.py --families gaussian --ns 10,100 --regimes replace

Appends one JSON line per row to benchmarks/results/sweeps.jsonl, prints a markdown table and
writes benchmarks/results/sweeps.png (speed-up vs n per regime).
"""

from __future__ import annotations

import argparse
import os
import statistics

import common
import numpy as np

import collapse_jax as cj

REGIMES = ("replace", "accumulate", "accumulate_subsample")

#: Per family: dimension, n values, test points, hyperparameters (collapse_jax names) and the
#: same setting in the baseline's keywords, model options, the metrics both sides compute and
#: how each is compared ("log": means of log values; "mean": plain means).
FAMILIES = {
    "gaussian": {
        "d": 10, "ns": (10, 32, 100, 316, 1000), "n_test": 200, "hparams": {"sigma": 1.0},
        "baseline": {"sigma2": 1.0}, "options": (),
        "checks": {"trace_ratio": "log", "mean_error": "log", "logdet_ratio": "mean"},
    },
    "linear_regression": {
        "d": 32, "ns": (100, 316, 1000), "n_test": 100, "hparams": {"sigma": 10.0},
        "baseline": {"sigma2": 100.0}, "options": (), "checks": {"test_error": "mean"},
    },
    "kde": {
        "d": 2, "ns": (10, 100, 1000), "n_test": 100, "hparams": {"h": 0.1, "noise": 0.05},
        "baseline": {"h": 0.1, "noise": 0.05, "n_test": 100},
        "options": (("bandwidth", "fixed"),), "checks": {"nll": "mean"},
    },
}

QUICK = {"seeds": 16, "generations": 20, "repeats": 5, "budget": 0.3, "min_seeds": 2,
         "families": "gaussian,linear_regression,kde",
         "ns": {"gaussian": (10, 100), "linear_regression": (100,), "kde": (10,)},
         "regimes": {"gaussian": ("replace",), "linear_regression": ("accumulate",),
                     "kde": ("accumulate_subsample",)}}


#: Families with an exact fast path (option ``fast_path``) and the regimes it applies to.
FAST_PATHS = {"gaussian": ("replace", "accumulate"), "linear_regression": ("replace", "accumulate")}


def paths(family: str, regime: str) -> list[bool | None]:
    """The fast_path values to run: both where the family's fast path applies ("fast", and
    "sample": the pool of rows), else the pool of rows only."""
    if family not in FAST_PATHS:
        return [None]
    return [True, False] if regime in FAST_PATHS[family] else [False]


def static_for(family: str, regime: str, n: int, generations: int,
               fast: bool | None) -> cj.StaticConfig:
    f = FAMILIES[family]
    options = f["options"] + ((("fast_path", fast),) if fast is not None else ())
    return cj.StaticConfig(model=family, regime=regime, n0=n, n=n, d=f["d"],
                           generations=generations, n_test=f["n_test"],
                           options=tuple(sorted(options)), metrics=tuple(f["checks"]))


#: Largest median log(arithmetic / geometric mean eigenvalue) of the baseline's last covariance
#: at which ``logdet_ratio`` is checked: e^8 ~ 3000, about 1 / sqrt(float32 eps).
LOGDET_GAP_MAX = 8.0


def agreement(a: np.ndarray, b: np.ndarray, how: str, skip: str = "") -> dict:
    """z = |mean(a) - mean(b)| / sqrt(se_a^2 + se_b^2) after the transform ``how``; ``checked``
    False (with the reason) when ``skip`` is given or a value is not finite."""
    if how == "log":
        a, b = np.log(a), np.log(b)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return {"z": None, "how": how, "checked": False, "reason": "non-finite values"}
    se = float(np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size))
    z = abs(float(a.mean()) - float(b.mean())) / max(se, 1e-300)
    return {"z": z, "how": how, "checked": not skip, "reason": skip,
            "mean_jax": float(a.mean()), "mean_np": float(b.mean()),
            "se_jax": float(np.sqrt(a.var(ddof=1) / a.size)),
            "se_np": float(np.sqrt(b.var(ddof=1) / b.size)), "seeds_jax": a.size,
            "seeds_np": b.size}


def skip_reason(metric: str, n: int, d: int, np_final: dict[str, np.ndarray]) -> str:
    """Why ``metric`` is not checked here ('' = it is): the Gaussian log det (module doc)."""
    if metric != "logdet_ratio":
        return ""
    if n <= d:
        return f"n={n} <= d={d}: singular covariance"
    gap = float(np.median(np.log(np_final["trace_ratio"]) - np_final["logdet_ratio"] / d))
    if gap > LOGDET_GAP_MAX:
        return (f"ill-conditioned covariance: median log(arith / geo mean eigenvalue) = "
                f"{gap:.1f} > {LOGDET_GAP_MAX}")
    return ""


def bench_config(family: str, regime: str, n: int, args, baseline: common.BaselineProcess,
                 env: dict) -> list[dict]:
    """Every row of one (family, regime, n): one per collapse_jax path, same baseline runs."""
    f = FAMILIES[family]
    hp = common.hparams(family, **f["hparams"])
    steady = min(args.seeds, args.kde_steady_seeds) if family == "kde" else args.seeds
    load_before = os.getloadavg()
    sides, finals = {}, {}
    for fast in paths(family, regime):
        static = static_for(family, regime, n, args.generations, fast)
        plan = common.plan(static, args.seeds, args.memory_gb,
                           chunk_size=steady if steady < args.seeds else None)
        first = common.timed_sweep(static, 0, np.arange(args.seeds), hp, plan)
        name = {True: "fast", False: "sample", None: "jax"}[fast]
        sides[name] = (static, first, plan if steady == args.seeds else
                       common.plan(static, steady, args.memory_gb, chunk_size=steady))
        finals[name] = [{k: v[:, -1] for k, v in first["metrics"].items()}]
        common.log(f"{family} {regime} n={n} {name}: first call {first['wall_s']:.2f} s "
                   f"(compile {first['compile_s']:.2f} s)")

    def jax_repeat(name):
        static, _, steady_plan = sides[name]

        def call(r):
            out = common.timed_sweep(static, r + 1, np.arange(steady), hp, steady_plan)
            finals[name].append({k: v[:, -1] for k, v in out.pop("metrics").items()})
            return {**out, "scaled_s": out["wall_s"] * args.seeds / steady}
        return call

    def numpy_repeat(r):
        return baseline.run(model=family, regime=regime, n=n, seeds=args.seeds,
                            budget_s=args.budget, min_seeds=args.min_seeds,
                            seed0=(r + 1) * 100_000, d=f["d"], generations=args.generations,
                            **f["baseline"])

    fns = {name: jax_repeat(name) for name in sides}
    fns["numpy"] = numpy_repeat
    reps = common.interleave(fns, args.repeats)
    np_s = statistics.median(x["seconds_all"] for x in reps["numpy"])
    np_final = {k: np.concatenate([np.asarray(x["final"][k]) for x in reps["numpy"]])
                for k in f["checks"]}
    rows = []
    for name, (static, first, _) in sides.items():
        jax_s = statistics.median(x["scaled_s"] for x in reps[name])
        jax_final = {k: np.concatenate([m[k] for m in finals[name]]) for k in f["checks"]}
        checks = {k: agreement(jax_final[k], np_final[k], how,
                               skip_reason(k, n, f["d"], np_final))
                  for k, how in f["checks"].items()}
        zs = [c["z"] for c in checks.values() if c["checked"]]
        rows.append({
            "family": family, "regime": regime, "n": n, "d": f["d"], "path": name,
            "seeds": args.seeds, "generations": args.generations, "repeats": args.repeats,
            "options": dict(static.options), "metrics": list(static.metrics),
            "steady_seeds": steady, "chunk_size": first["chunk_size"],
            "chain_chunks": -(-args.seeds // first["chunk_size"]),
            "compile_s": first["compile_s"], "jax_first_wall_s": first["wall_s"],
            "jax_steady_s": jax_s, "jax_steady_all_s": [x["scaled_s"] for x in reps[name]],
            "jax_run_all_s": [x["run_s"] for x in reps[name]],
            "numpy_s": np_s, "numpy_all_s": [x["seconds_all"] for x in reps["numpy"]],
            "numpy_seeds_timed": [x["seeds_run"] for x in reps["numpy"]],
            "speedup_wall": np_s / first["wall_s"], "speedup_steady": np_s / jax_s,
            "agreement": checks, "max_z": max(zs) if zs else None,
            "agree": all(z <= 4.0 for z in zs),
            "unchecked": ",".join(k for k, c in checks.items() if not c["checked"]),
            "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "peak_rss_mb": common.peak_rss_mb(), "quick": args.quick, **env, **baseline.info,
        })
        common.append_jsonl("sweeps", rows[-1])
        common.log(f"  {name}: jax {jax_s:.3g} s vs numpy {np_s:.3g} s: "
                   f"x{rows[-1]['speedup_steady']:.3g} steady, x{rows[-1]['speedup_wall']:.3g} "
                   f"incl. compile; max z {rows[-1]['max_z']}")
    return rows


def plot(rows: list[dict]) -> None:
    plt = common.pyplot()
    families = [f for f in FAMILIES if any(r["family"] == f for r in rows)]
    fig, axes = plt.subplots(1, len(families), figsize=(5.5 * len(families), 4), squeeze=False)
    for ax, family in zip(axes[0], families, strict=True):
        for regime in REGIMES:
            for path in ("fast", "sample", "jax"):
                rs = sorted((r for r in rows if (r["family"], r["regime"], r["path"])
                             == (family, regime, path)), key=lambda r: r["n"])
                if not rs:
                    continue
                label = regime if path == "jax" else f"{regime} ({path})"
                ns = [r["n"] for r in rs]
                (line,) = ax.plot(ns, [r["speedup_steady"] for r in rs],
                                  "o-" if path != "sample" else "^:", label=f"{label} steady")
                ax.plot(ns, [r["speedup_wall"] for r in rs], "s--", color=line.get_color(),
                        alpha=0.6, label=f"{label} incl. compile")
        r0 = next(r for r in rows if r["family"] == family)
        load = r0["loadavg_before"][0]
        ax.set(xscale="log", yscale="log", xlabel="n per generation",
               ylabel="speed-up: numpy s / collapse_jax s",
               title=f"{family}: {r0['seeds']} seeds x {r0['generations']} gens"
                     f"{' (quick)' if r0['quick'] else ''}, load {load:.1f}")
        ax.axhline(1.0, color="k", lw=0.5)
        ax.legend(fontsize=6)
    common.savefig(fig, "sweeps")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--families", default=None, help=f"default: {','.join(FAMILIES)}")
    p.add_argument("--regimes", default=None, help=f"default: {','.join(REGIMES)}")
    p.add_argument("--ns", default=None, help="n values for every family (default: FAMILIES)")
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument("--generations", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--budget", type=float, default=3.0,
                   help="baseline seconds per repeat (then scaled to --seeds)")
    p.add_argument("--min-seeds", type=int, default=4, help="baseline seeds per repeat, at least")
    p.add_argument("--kde-steady-seeds", type=int, default=20,
                   help="KDE chains per steady repeat (and per chunk of the first call)")
    p.add_argument("--baseline-env", choices=("user", "inherit"), default="user")
    p.add_argument("--memory-gb", type=float, default=4.0, help="run_sweep plan budget (GiB)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK['seeds']} seeds x {QUICK['generations']} gens, a "
                        "few configurations")
    args = p.parse_args()
    if args.quick:
        for k in ("seeds", "generations", "repeats", "budget", "min_seeds"):
            setattr(args, k, QUICK[k])
    families = (args.families or (QUICK["families"] if args.quick else ",".join(FAMILIES)))
    env = common.environment()
    common.log("environment:", env)
    rows = []
    with common.BaselineProcess(args.baseline_env) as baseline:
        common.log("baseline:", baseline.info)
        for family in families.split(","):
            ns = (tuple(map(int, args.ns.split(","))) if args.ns else
                  QUICK["ns"][family] if args.quick else FAMILIES[family]["ns"])
            regimes = (args.regimes.split(",") if args.regimes else
                       QUICK["regimes"][family] if args.quick else REGIMES)
            for regime in regimes:
                for n in ns:
                    rows += bench_config(family, regime, n, args, baseline, env)
    cols = ["family", "regime", "n", "path", "compile_s", "jax_first_wall_s", "jax_steady_s",
            "numpy_s", "speedup_wall", "speedup_steady", "max_z", "agree", "unchecked"]
    print(f"load average at start {env['loadavg']}, at end {os.getloadavg()}; baseline env "
          f"{args.baseline_env} (OPENBLAS_CORETYPE={baseline.info.get('OPENBLAS_CORETYPE')})")
    print(common.table(rows, cols, {c: ".3g" for c in cols[4:11]}))
    plot(rows)


if __name__ == "__main__":
    main()
