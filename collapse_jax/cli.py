"""``collapse-jax``: run an experiment config, or list what exists.

    collapse-jax run CONFIG [--set key=value ...] --out DIR [--quiet] [--dry-run]
                     [--overwrite | --resume] [--keep K] [--debug]
                     [--coordinator HOST:PORT --num-processes N --process-id I]
    collapse-jax list
    collapse-jax families
    collapse-jax analyze DIR [--metric M] [--generation G] [--size FIELD]
    collapse-jax reproduce [--quick] [--only NAME,...] --out DIR

``--resume`` continues a killed run from the latest checkpoint in DIR (bit-identical to an
uninterrupted run). For a multi-host run start one process per host with the same command and
``--coordinator/--num-processes/--process-id`` (or the COLLAPSE_JAX_COORDINATOR,
COLLAPSE_JAX_NUM_PROCESSES, COLLAPSE_JAX_PROCESS_ID environment variables; ``--distributed``
lets ``jax.distributed.initialize`` detect TPU pods and SLURM); process 0 writes the outputs.

CONFIG is a path to a python file with ``get_config() -> Experiment`` or the name of a file in
``configs/``. Exit codes: 0 ok, 2 bad input (one line naming the field, before any compile),
1 run failure (one line; the traceback with ``--debug``). ``--dry-run`` validates and prints the
plan (groups, chains, generations, memory per chain, compiles) without compiling anything.
An output directory that holds a different run is refused unless ``--overwrite``; rerunning the
same config into its own directory (or ``--resume``) is allowed.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import difflib
import importlib.util
import json
import os
import re
import shlex
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

import jax

from collapse_jax import analyze
from collapse_jax.config import ConfigError, Experiment
from collapse_jax.experiment import run_experiment
from collapse_jax.files import write_json
from collapse_jax.mesh import initialize_distributed
from collapse_jax.model import MODELS, SOURCES
from collapse_jax.overrides import override
from collapse_jax.plan import SweepPlan, memory_budget, plan_run
from collapse_jax.plots import plot_all
from collapse_jax.progress import Progress
from collapse_jax.regimes import (
    REGIME_DESCRIBE,
    REGIME_HPARAMS,
    REGIME_RANGES,
    REGIMES,
    make_regime,
)
from collapse_jax.reproduce.runner import reproduce
from collapse_jax.results import config_record, flag_counts, write_partial, write_results
from collapse_jax.store import check_output_dir, finished_columns, stored_progress
from collapse_jax.validate import RunSpec, hparam_range, resolve


def config_dirs() -> list[Path]:
    """Where config names are looked up: ./configs, then the repository's configs/."""
    here = Path(__file__).resolve().parent.parent / "configs"
    return [p for p in dict.fromkeys([Path.cwd() / "configs", here]) if p.is_dir()]


def load_config(ref: str) -> Experiment:
    """The Experiment of a config file path or config name."""
    path = Path(ref)
    if not path.is_file():
        for d in config_dirs():
            cand = d / (ref if ref.endswith(".py") else f"{ref}.py")
            if cand.is_file():
                path = cand
                break
        else:
            names = sorted(p.stem for d in config_dirs() for p in d.glob("*.py")
                           if not p.name.startswith("_"))
            raise ConfigError(f"config={ref!r}: no such file or config name; "
                              f"known configs: {', '.join(names) or '(none)'}")
    if path.suffix != ".py":
        raise ConfigError(f"config={str(path)!r}: not a python file; a config is a .py file "
                          f"defining get_config() -> Experiment")
    spec = importlib.util.spec_from_file_location(f"collapse_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - report any error in user code on one line
        raise ConfigError(f"config={str(path)!r}: failed to load: {_describe(e)}") from e
    if not callable(getattr(module, "get_config", None)):
        raise ConfigError(f"config={str(path)!r}: defines no get_config()")
    try:
        exp = module.get_config()
    except ConfigError as e:
        raise ConfigError(f"config={str(path)!r}: {e}") from e
    except Exception as e:  # noqa: BLE001 - an error in user code, on one line
        raise ConfigError(f"config={str(path)!r}: get_config() failed: {_describe(e)}") from e
    if not isinstance(exp, Experiment):
        raise ConfigError(f"config={str(path)!r}: get_config() must return an Experiment, "
                          f"got {type(exp).__name__}")
    return exp


def _describe(e: BaseException) -> str:
    """One line for an error in a config file; unknown Experiment fields get a did-you-mean."""
    text = " ".join(str(e).split())
    m = re.search(r"unexpected keyword argument '(\w+)'", text)
    if isinstance(e, TypeError) and m and "Experiment" in text:
        fields = [f.name for f in dataclasses.fields(Experiment)]
        close = difflib.get_close_matches(m.group(1), fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"Experiment has no field {m.group(1)!r}{hint}; fields: {', '.join(fields)}"
    if isinstance(e, SyntaxError):
        return f"SyntaxError: {e.msg} (line {e.lineno})"
    return f"{type(e).__name__}: {text}"


def _cmd_list() -> int:
    print("models:")
    for name, spec in sorted(MODELS.items()):
        hp = ", ".join(f"{k}={v} in {hparam_range(name, k) or 'any'}"
                       for k, v in spec.hparams.items())
        print(f"  {name:20s} {spec.doc}")
        print(f"  {'':20s} source={spec.source}; hparams: {hp or '-'}; "
              f"metrics: {', '.join(spec.metrics)}")
    print("regimes:\n  " + ", ".join(REGIMES))
    print("sources:\n  " + ", ".join(sorted(SOURCES)))
    print("configs:")
    for d in config_dirs():
        for p in sorted(d.glob("*.py")):
            if not p.name.startswith("_"):
                print(f"  {p.stem:20s} {p}")
    return 0


def families_text() -> str:
    """Every model family: what it is, its source, metrics, and each hyperparameter (default,
    allowed range, meaning) and option (default, allowed values, meaning); then the regimes'
    hyperparameters."""
    lines = []
    for name, spec in sorted(MODELS.items()):
        lines.append(f"{name}: {spec.doc}")
        lines.append(f"  source {spec.source}; float64 {'yes' if spec.float64 else 'no'}; "
                     f"metrics: {', '.join(spec.metrics)}")
        for k, v in spec.hparams.items():
            rng = hparam_range(name, k) or "any"
            lines.append(f"  hparams.{k} = {v:g} in {rng}: {spec.describe.get(k, '')}".rstrip(": "))
        for k, allowed in spec.options.items():
            others = ", ".join(map(str, allowed[1:]))
            lines.append(f"  options.{k} = {allowed[0]!r} (or {others}): "
                         f"{spec.describe.get(k, '')}".rstrip(": "))
    lines.append("regime hyperparameters:")
    for regime, hp in REGIME_HPARAMS.items():
        for k, v in hp.items():
            lines.append(f"  hparams.{k} = {v:g} in {REGIME_RANGES[k]} ({regime}): "
                         f"{REGIME_DESCRIBE.get(k, '')}")
    return "\n".join(lines)


def _cmd_run(args: argparse.Namespace) -> int:
    exp = override(load_config(args.config), args.set or [])
    if args.keep is not None:
        exp = override(exp, [f"keep_checkpoints={args.keep}"])
    spec = resolve(exp)
    if args.out is None and not args.dry_run:
        raise ConfigError("--out: required (the directory the results go to); --dry-run needs "
                          "none")
    status = None if args.out is None else check_output_dir(
        args.out, spec.experiment, overwrite=args.overwrite, resume=args.resume,
        dry_run=args.dry_run)
    if args.dry_run:
        print(format_plan(spec, plan_run(spec)))
        if status is not None:
            print(f"  out: {args.out} ({_OUT_STATUS[status]})")
        return 0
    initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                           auto=args.distributed)
    lead = jax.process_index() == 0  # process 0 writes the merged outputs
    t0 = time.perf_counter()
    if lead:
        write_json(Path(args.out) / "config.json", config_record(spec))
        write_partial(spec, args.out, {})
    try:
        with _stoppable(spec, not args.quiet, args.out) as progress:
            results = run_experiment(spec, progress=progress, out_dir=args.out,
                                     resume=args.resume)
    except BaseException as e:
        if lead:  # the finished groups' rows stay readable; parts/ keeps the rest for --resume
            rows = spec.chains * spec.experiment.generations
            write_partial(spec, args.out, finished_columns(args.out, rows), error=e)
        raise
    if not lead:
        return 0
    t_write = time.perf_counter()
    write_results(results, args.out, csv=True if args.csv else None)
    t_figures = time.perf_counter()
    figures = plot_all(results, args.out)
    if analyze.size_fields(spec.swept):  # a sweep over data volume: scaling.csv / scaling.png
        figures += analyze.analyze(results, args.out)[1:]
    wall = (t_end := time.perf_counter()) - t0
    if not args.quiet:
        compile_s = sum(g["compile_seconds"] for g in results.groups)
        run_s = sum(g["run_seconds"] for g in results.groups)
        final = results.final()
        print(final.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(format_flags(results))
        split = (f"compile {compile_s:.1f} s, run {run_s:.1f} s, table {results.table_seconds:.1f}"
                 f" s, writing {t_figures - t_write:.1f} s, figures {t_end - t_figures:.1f} s")
        print(f"{len(results.table)} rows, {len(figures)} figures -> {args.out} ({split}, total "
              f"{wall:.1f} s)")
    return 0


_OUT_STATUS = {"new": "new or empty directory", "same": "holds this same run; rerun is safe",
               "overwrite": "holds another run; --overwrite would replace it"}


def format_flags(results) -> str:
    """One line: how many chains hit each flag (``collapsed``, ``nonfinite``), per regime."""
    counts = flag_counts(results.table, results.swept)
    per = "; ".join(
        f"{r}: " + ", ".join(f"{f} {c[f]}" for f in ("collapsed", "nonfinite") if f in c)
        for r, c in counts["by_regime"].items()
    )
    return (f"flags (chains of {counts['chains']} that hit each at any generation): "
            f"collapsed {counts.get('collapsed', 0)}, nonfinite {counts.get('nonfinite', 0)}"
            f" ({per})")


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def format_plan(spec: RunSpec, plans: list[SweepPlan]) -> str:
    """The dry-run printout: one line per compiled group, with the chunk size the run uses."""
    exp = spec.experiment
    rows = len(plans) * spec.chains * exp.generations
    lines = [f"plan for {exp.name!r} (model {exp.model}, {'float64' if exp.x64 else 'float32'}): "
             f"{len(plans)} groups, {len(plans)} compiles, {len(plans) * spec.chains} chains, "
             f"{rows} rows; nothing compiled (dry run)"]
    lines.append(f"  {'regime':22s} {'n':>6s} {'n0':>6s} {'d':>5s} {'chains':>7s} "
                 f"{'gens':>6s} {'capacity':>9s} {'mem/chain':>10s} {'chunk':>6s} {'chunks':>6s}")
    for static, plan in zip(spec.statics, plans, strict=True):
        lines.append(f"  {static.regime:22s} {static.n:6d} {static.n0:6d} {static.d:5d} "
                     f"{plan.num_chains:7d} {static.generations:6d} "
                     f"{make_regime(static).capacity:9d} {_bytes(plan.bytes_per_chain):>10s} "
                     f"{plan.chunk_size:6d} {plan.n_chunks:6d}")
    peak = max(p.bytes_per_chain * p.chunk_size // p.devices for p in plans)
    lines.append(f"  peak memory per device ~{_bytes(peak)} (budget {_bytes(memory_budget())}, "
                 f"{plans[0].devices} devices)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="collapse-jax", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment config")
    run.add_argument("config", help="config file or name (see `collapse-jax list`)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a config key; repeatable; comma lists sweep")
    run.add_argument("--out", help="output directory (not needed with --dry-run)")
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    run.add_argument("--csv", action="store_true",
                     help="also write metrics.csv for tables of over a million rows (the "
                          "metrics/ Parquet dataset always holds the table)")
    run.add_argument("--dry-run", action="store_true",
                     help="validate and print the plan (groups, memory, compiles); compile nothing")
    run.add_argument("--overwrite", action="store_true",
                     help="replace a different run already in --out")
    run.add_argument("--resume", action="store_true",
                     help="continue the same run from the latest checkpoint in --out "
                          "(refused if --out holds another run)")
    run.add_argument("--debug", action="store_true", help="print the traceback of a run failure")
    run.add_argument("--keep", type=int, metavar="K",
                     help="checkpoints to keep (config keep_checkpoints, default 3)")
    run.add_argument("--coordinator", metavar="HOST:PORT",
                     help="multi-host: address of process 0 (env COLLAPSE_JAX_COORDINATOR)")
    run.add_argument("--num-processes", type=int, metavar="N",
                     help="multi-host: number of processes (env COLLAPSE_JAX_NUM_PROCESSES)")
    run.add_argument("--process-id", type=int, metavar="I",
                     help="multi-host: this process (env COLLAPSE_JAX_PROCESS_ID)")
    run.add_argument("--distributed", action="store_true",
                     help="multi-host: jax.distributed.initialize() with auto-detection")
    rep = sub.add_parser("reproduce", help="run the curated literature studies; write "
                                             "DIR/report.md and a self-contained report.html")
    rep.add_argument("--quick", action="store_true", help="fewer seeds; neural studies skipped")
    rep.add_argument("--only", metavar="NAME,...", help="only these studies")
    rep.add_argument("--out", required=True, help="output directory")
    sub.add_parser("list", help="list models, regimes, sources and configs")
    sub.add_parser("families", help="every model family's hyperparameters and options: "
                                    "defaults, allowed values and meaning")
    ana = sub.add_parser("analyze", help="collapse vs data volume of a finished run "
                                         "(DIR/scaling.csv, DIR/scaling.png)")
    ana.add_argument("dir", help="the run's output directory")
    ana.add_argument("--metric", help="metric of the figure (default: the model's first)")
    ana.add_argument("--generation", type=int, help="generation of the figure (default: last)")
    ana.add_argument("--size", help="swept size field of the x axis (default: n, n0, d)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            return _cmd_list()
        if args.command == "analyze":
            return analyze.main(args.dir, args.metric, args.generation, args.size)
        if args.command == "reproduce":
            reproduce(args.out, quick=args.quick, only=args.only)
            return 0
        if args.command == "families":
            print(families_text())
            return 0
        return _cmd_run(args)
    except ConfigError as e:
        print(f"collapse-jax: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"collapse-jax: interrupted; {_kept(args, argv)}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # noqa: BLE001 - a run failure: one line, traceback on request
        if getattr(args, "debug", False):
            traceback.print_exc()
        text = " ".join(str(e).split())
        hint = "" if getattr(args, "debug", False) else " (rerun with --debug for the traceback)"
        print(f"collapse-jax: run failed: {type(e).__name__}: {text}{hint}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _stoppable(spec: RunSpec, show: bool, out: str):
    """The run's ``Progress`` (on stderr unless ``--quiet``, and in ``DIR/run.log``), within
    which the first Ctrl-C stops the run at the next chunk boundary (its state checkpointed)
    and a second one at once."""
    stop = threading.Event()

    def on_interrupt(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\ncollapse-jax: stopping at the end of the current chunk (Ctrl-C again: now)",
              file=sys.stderr)

    def check(label, done, total):
        if stop.is_set():
            raise KeyboardInterrupt

    total = len(spec.statics) * spec.chains * spec.experiment.generations
    progress = Progress(total, show=show and jax.process_index() == 0,
                        log=Path(out) / "run.log" if jax.process_index() == 0 else None,
                        callback=check)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_interrupt) if main else None
    try:
        yield progress
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def _kept(args: argparse.Namespace, argv: list[str]) -> str:
    """What an interrupted run kept, and the command that continues it."""
    if args.command != "run" or not args.out or args.dry_run:
        return "nothing was written"
    try:
        config = json.loads((Path(args.out) / "config.json").read_text())
        rows, chains = stored_progress(args.out, config["experiment"]["generations"])
    except (OSError, ValueError, KeyError):
        return "nothing was written"
    again = [a for a in argv if a not in ("--overwrite", "--resume")] + ["--resume"]
    return (f"{rows} chain-generations ({chains} whole chains) are stored in {args.out}; "
            f"continue with: {shlex.join(['collapse-jax', *again])}")


def entry() -> None:
    """The ``collapse-jax`` command: ``main()``, the exit handlers (logging, JAX), then no
    interpreter teardown (finalising JAX, XLA, pandas and matplotlib took ~1 s; the handlers
    6 ms). ``main`` returns once every result and checkpoint is written and closed."""
    code = main()
    atexit._run_exitfuncs()  # what a normal exit runs first
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
