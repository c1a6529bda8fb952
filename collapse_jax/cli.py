"""``collapse-jax``: run an experiment config, or list what exists.

    collapse-jax run CONFIG [--set key=value ...] --out DIR [--quiet] [--resume] [--keep K]
                     [--coordinator HOST:PORT --num-processes N --process-id I]
    collapse-jax list

``--resume`` continues a killed run from the latest checkpoint in DIR (bit-identical to an
uninterrupted run). For a multi-host run start one process per host with the same command and
``--coordinator/--num-processes/--process-id`` (or the COLLAPSE_JAX_COORDINATOR,
COLLAPSE_JAX_NUM_PROCESSES, COLLAPSE_JAX_PROCESS_ID environment variables; ``--distributed``
lets ``jax.distributed.initialize`` detect TPU pods and SLURM); process 0 writes the outputs.

CONFIG is a path to a python file with ``get_config() -> Experiment`` or the name of a file in
``configs/``. Exit codes: 0 ok, 2 bad input (one line naming the field), 1 run failure.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

from collapse_jax.config import ConfigError, Experiment


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
    spec = importlib.util.spec_from_file_location(f"collapse_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - report any error in user code on one line
        raise ConfigError(f"config={str(path)!r}: failed to load: {type(e).__name__}: {e}") from e
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config={str(path)!r}: defines no get_config()")
    exp = module.get_config()
    if not isinstance(exp, Experiment):
        raise ConfigError(f"config={str(path)!r}: get_config() must return an Experiment, "
                          f"got {type(exp).__name__}")
    return exp


def _cmd_list() -> int:
    from collapse_jax.model import MODELS, SOURCES
    from collapse_jax.pool import REGIMES

    print("models:")
    for name, spec in sorted(MODELS.items()):
        hp = ", ".join(f"{k}={v}" for k, v in spec.hparams.items())
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


def _cmd_run(args: argparse.Namespace) -> int:
    from collapse_jax.config import validate
    from collapse_jax.experiment import run_experiment
    from collapse_jax.plots import plot_all
    from collapse_jax.results import write_results
    from collapse_jax.sweep import initialize_distributed

    initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                           auto=args.distributed)
    exp = load_config(args.config).override(args.set or [])
    if args.keep is not None:
        exp = exp.override([f"keep_checkpoints={args.keep}"])
    exp = validate(exp)
    t0 = time.perf_counter()
    results = run_experiment(exp, progress=not args.quiet, out_dir=args.out, resume=args.resume)
    import jax

    if jax.process_index() != 0:
        return 0
    paths = write_results(results, args.out)
    figures = plot_all(results, args.out)
    wall = time.perf_counter() - t0
    if not args.quiet:
        compile_s = sum(g["compile_seconds"] for g in results.groups)
        run_s = sum(g["run_seconds"] for g in results.groups)
        final = results.final()
        print(final.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"{len(results.table)} rows, {len(figures)} figures -> {args.out} "
              f"(compile {compile_s:.1f} s, run {run_s:.1f} s, total {wall:.1f} s)")
        del paths
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="collapse-jax", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment config")
    run.add_argument("config", help="config file or name (see `collapse-jax list`)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a config key; repeatable; comma lists sweep")
    run.add_argument("--out", required=True, help="output directory")
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    run.add_argument("--resume", action="store_true",
                     help="continue from the latest checkpoint in --out")
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
    sub.add_parser("list", help="list models, regimes, sources and configs")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            return _cmd_list()
        return _cmd_run(args)
    except ConfigError as e:
        print(f"collapse-jax: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
