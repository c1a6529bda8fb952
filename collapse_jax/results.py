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

from collapse_jax.experiment import Results


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
    """Write ``metrics.csv`` (and ``metrics.parquet`` when pyarrow is installed),
    ``config.json`` and ``summary.json`` into ``out_dir``; return the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics.csv": out / "metrics.csv"}
    with atomic_path(paths["metrics.csv"]) as tmp:
        results.table.to_csv(tmp, index=False)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        pass
    else:
        paths["metrics.parquet"] = out / "metrics.parquet"
        with atomic_path(paths["metrics.parquet"]) as tmp:
            results.table.to_parquet(tmp, index=False)
    paths["config.json"] = out / "config.json"
    write_json(paths["config.json"], {
        "experiment": results.experiment.to_dict(),
        "statics": [vars(s) | {"options": dict(s.options)} for s in results.experiment.statics()],
        "versions": versions(),
    })
    paths["summary.json"] = out / "summary.json"
    final = results.final()
    write_json(paths["summary.json"], {
        "experiment": results.experiment.name,
        "model": results.experiment.model,
        "rows": int(len(results.table)),
        "chains": int(results.table.groupby(["regime", *results.swept, "seed"]).ngroups),
        "generations": results.experiment.generations,
        "timing": results.groups,
        "final_generation": final.to_dict(orient="records"),
    })
    return paths
