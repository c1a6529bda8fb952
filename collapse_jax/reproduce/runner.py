"""``collapse-jax reproduce``: run the curated studies, judge every checked number, write reports.

Each study's config is loaded from ``configs/``, overridden with the study's ``--set`` strings,
and run into ``DIR/<study>/`` exactly as ``collapse-jax run`` would (config.json, the metrics/
dataset, metrics.csv, summary.json, figures), so the printed command reproduces it alone. A
progress line per study goes to stderr.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from collapse_jax.config import ConfigError, Experiment
from collapse_jax.experiment import run_experiment
from collapse_jax.files import write_json
from collapse_jax.overrides import override
from collapse_jax.plots import plot_all
from collapse_jax.reproduce.core import Check, Curve, Study
from collapse_jax.reproduce.report import write_reports
from collapse_jax.reproduce.studies import pick
from collapse_jax.reproduce.verdict import Verdict, judge
from collapse_jax.results import config_record, write_results
from collapse_jax.store import check_output_dir
from collapse_jax.validate import resolve

CONFIGS = Path(__file__).resolve().parent.parent.parent / "configs"


class Outcome(NamedTuple):
    """A study's result: its checks with verdicts, curves, command, seconds, or why skipped."""

    study: Study
    command: str
    checks: list[tuple[Check, Verdict]]
    curves: list[Curve]
    seconds: float
    skipped: str = ""
    experiment: Any = None


def config_path(name: str) -> Path:
    """The file of config ``name`` (./configs first, then the repository's)."""
    for d in (Path.cwd() / "configs", CONFIGS):
        if (d / f"{name}.py").is_file():
            return d / f"{name}.py"
    raise ConfigError(f"config={name!r}: not found in ./configs or {CONFIGS}")


def load(name: str) -> Experiment:
    """``get_config()`` of a config of ``configs/``."""
    path = config_path(name)
    spec = importlib.util.spec_from_file_location(f"collapse_jax_reproduce_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def study_sets(study: Study, quick: bool) -> tuple[str, ...]:
    """The ``--set`` strings of a study (the quick ones after the full ones)."""
    return study.sets + (study.quick if quick else ())


def command(study: Study, sets: tuple[str, ...], out: Path) -> str:
    """The ``collapse-jax run`` command that reproduces one study alone."""
    args = ["collapse-jax", "run", f"configs/{study.config}.py"]
    for s in sets:
        args += ["--set", s]
    return shlex.join([*args, "--out", str(out / study.name)])


def run_study(study: Study, out: Path, quick: bool) -> Outcome:
    """Run one study into ``out/<name>/`` and judge its checks."""
    sets = study_sets(study, quick)
    cmd = command(study, sets, out)
    t0 = time.perf_counter()
    exp = override(load(study.config), list(sets))
    spec = resolve(exp)
    run_dir = out / study.name
    check_output_dir(run_dir, spec.experiment, overwrite=True)
    write_json(run_dir / "config.json", config_record(spec))
    results = run_experiment(spec, out_dir=run_dir)
    write_results(results, run_dir)
    plot_all(results, run_dir)
    checks, curves = study.analyze(results.table, spec.experiment)
    judged = [(c, judge(c.estimate, c.reference, c.mode, c.rel_tol)) for c in checks]
    return Outcome(study, cmd, judged, curves, time.perf_counter() - t0,
                   experiment=spec.experiment)


def reproduce(out: str | Path, *, quick: bool = False, only: str | None = None,
              studies=None, stream=sys.stderr) -> list[Outcome]:
    """Run the studies (``only``: comma-separated names), write ``out/report.md`` and
    ``out/report.html``, and return the outcomes. Neural studies are skipped under ``quick``."""
    chosen = pick(only) if studies is None else pick(only, tuple(studies))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    outcomes, t_all = [], time.perf_counter()
    for i, study in enumerate(chosen, 1):
        label = f"[{i}/{len(chosen)}] {study.name}"
        if quick and study.neural:
            sets = study_sets(study, False)
            outcomes.append(Outcome(study, command(study, sets, out), [], [], 0.0,
                                    skipped="neural study: skipped under --quick"))
            print(f"{label} ... skipped (neural, --quick)", file=stream, flush=True)
            continue
        print(f"{label} ...", end="", file=stream, flush=True)
        outcome = run_study(study, out, quick)
        outcomes.append(outcome)
        bad = sum(v.status != c.expect for c, v in outcome.checks)
        print(f" {outcome.seconds:.1f} s ({len(outcome.checks)} checks, {bad} unexpected)",
              file=stream, flush=True)
    write_reports(outcomes, out, quick=quick, seconds=time.perf_counter() - t_all)
    return outcomes
