"""Writing results: the tidy table, the resolved config and a summary, all written atomically.

Every file is written to a temporary name in the output directory and moved into place with
``os.replace``, so a reader (or a crash) never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import jax
import pandas as pd

from collapse_jax.config import NOT_RESULT_FIELDS, ConfigError, Experiment
from collapse_jax.experiment import Results, flag_counts
from collapse_jax.tables import write_csv, write_parquet


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success move it over ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (NaN becomes null)."""
    write_text(path, json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def versions() -> dict[str, str]:
    """Versions of the library, Python and the numerical stack, and the device kind."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("collapse_jax", "jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    out["devices"] = [str(d) for d in jax.devices()]
    return out


def write_results(results: Results, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``metrics.csv``, ``metrics.parquet`` (the same table with exact dtypes, faster to
    load), ``config.json`` and ``summary.json`` into ``out_dir``; return the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics.csv": out / "metrics.csv", "metrics.parquet": out / "metrics.parquet"}
    write_csv(results.table, paths["metrics.csv"])
    write_parquet(results.table, paths["metrics.parquet"])
    paths["config.json"] = out / "config.json"
    write_json(paths["config.json"], config_record(results.experiment))
    paths["summary.json"] = out / "summary.json"
    final = results.final()
    write_json(paths["summary.json"], {
        "experiment": results.experiment.name,
        "model": results.experiment.model,
        "complete": True,
        "rows": int(len(results.table)),
        "chains": int(len(results.table) // results.experiment.generations),
        "generations": results.experiment.generations,
        "flags": flag_counts(results.table, results.swept),
        "timing": results.groups,
        "final_generation": final.to_dict(orient="records"),
    })
    return paths


def config_record(exp: Experiment) -> dict[str, Any]:
    """What ``config.json`` holds: the resolved experiment, its static groups, the versions."""
    return {
        "experiment": exp.to_dict(),
        "statics": [vars(s) | {"options": dict(s.options)} for s in exp.statics()],
        "versions": versions(),
    }


#: Files a run writes into its output directory (``--overwrite`` removes these and ``*.png``).
RUN_FILES = ("metrics.csv", "metrics.parquet", "config.json", "summary.json")


def check_output_dir(
    out_dir: str | os.PathLike, exp: Experiment, *, overwrite: bool = False, resume: bool = False,
    dry_run: bool = False,
) -> str:
    """Refuse an output directory that already holds a different run.

    Compares the ``experiment`` entry of an existing ``config.json`` with ``exp`` (resolved, as
    JSON, ignoring ``NOT_RESULT_FIELDS``). Returns ``"new"`` (missing or empty directory),
    ``"same"`` (it holds this very run: rerunning or resuming it is safe) or ``"overwrite"`` (its
    run files were removed; with ``dry_run`` nothing is removed).

    Raises:
        ConfigError: the directory holds a different run, or files that are not a run, and
            ``overwrite`` is False; or ``resume`` is asked for a different run.
    """
    out = Path(out_dir)
    if overwrite and resume:
        raise ConfigError("--overwrite and --resume: choose one (overwrite discards the old run)")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={str(out)!r}: exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return "new"
    old_path = out / "config.json"
    old = None
    if old_path.is_file():
        try:
            old = json.loads(old_path.read_text()).get("experiment")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            old = None
    new = _result_fields(json.loads(json.dumps(_clean(exp.to_dict()))))
    old = _result_fields(old) if isinstance(old, dict) else old
    if old == new:
        return "same"
    if resume:
        what = "a different run" if old is not None else "no readable config.json"
        raise ConfigError(f"out={str(out)!r}: --resume, but it holds {what}"
                          f"{_differences(old, new)}; use the same config, or --overwrite")
    if not overwrite:
        if old is None:
            raise ConfigError(f"out={str(out)!r}: not empty and holds no collapse-jax run "
                              f"(no readable config.json); choose a new directory or pass "
                              f"--overwrite")
        raise ConfigError(f"out={str(out)!r}: already holds a different run"
                          f"{_differences(old, new)}; choose a new directory, or pass "
                          f"--overwrite to replace it")
    if dry_run:
        return "overwrite"
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for png in out.glob("*.png"):
        png.unlink()
    return "overwrite"


#: Experiment fields that do not change the results (a run with other values is the same run).


def _result_fields(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in NOT_RESULT_FIELDS}


def _differences(old: Any, new: dict[str, Any], limit: int = 3) -> str:
    if not isinstance(old, dict):
        return ""
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    parts = [f"{k}: {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}" for k in keys[:limit]]
    more = f", +{len(keys) - limit} more" if len(keys) > limit else ""
    return f" (differs in {', '.join(parts)}{more})" if parts else ""


class GroupWriter:
    """Writes results while a run goes: ``run_experiment(exp, on_group=GroupWriter(out, exp))``.

    ``start()`` writes ``config.json`` and a ``summary.json`` with ``"complete": false``; each
    finished StaticConfig group updates ``summary.json`` (its rows are kept in memory);
    ``fail(error)`` records the error and writes ``metrics.csv`` with every finished group's rows.
    An exception in a later group therefore leaves the earlier groups' rows readable (a killed
    process keeps its finished generations in ``parts/`` for ``--resume``); ``write_results`` at
    the end writes the complete outputs. The table is serialised once either way.
    """

    def __init__(self, out_dir: str | os.PathLike, exp: Experiment):
        self.out = Path(out_dir)
        self.exp = exp
        self.frames: list[pd.DataFrame] = []
        self.groups: list[dict[str, Any]] = []

    def start(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "config.json", config_record(self.exp))
        self._summary()

    def __call__(self, frame: pd.DataFrame, group: dict[str, Any]) -> None:
        self.frames.append(frame)
        self.groups.append(group)
        self._summary()

    def fail(self, error: BaseException) -> None:
        if self.frames:
            write_csv(pd.concat(self.frames, ignore_index=True), self.out / "metrics.csv")
        self._summary(error=f"{type(error).__name__}: {' '.join(str(error).split())}")

    def _summary(self, **extra: Any) -> None:
        rows = int(sum(len(f) for f in self.frames))
        write_json(self.out / "summary.json", {
            "experiment": self.exp.name, "model": self.exp.model, "complete": False,
            "groups_done": len(self.groups), "groups_total": len(self.exp.statics()),
            "rows": rows, "timing": self.groups, **extra,
        })
