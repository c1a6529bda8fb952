"""Shared helpers of the benchmark scripts: environment, timing, JSON lines, tables.

Importing collapse_jax first applies its XLA CPU flags (``collapse_jax/_xla.py``: a deadlock
workaround) before JAX starts a backend.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

import collapse_jax  # noqa: F401  (XLA CPU flags before the backend starts)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def environment() -> dict[str, Any]:
    """Device, versions and machine load, recorded with every result."""
    import numpy as np

    return {
        "device": str(jax.devices()[0]),
        "platform": jax.default_backend(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss, MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def median_time(fn: Callable[[], Any], repeats: int = 5) -> tuple[float, list[float]]:
    """Median wall seconds of ``repeats`` calls of ``fn`` (results blocked on)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def append_jsonl(name: str, record: dict[str, Any]) -> None:
    """Append one result line to ``benchmarks/results/NAME.jsonl``."""
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"{name}.jsonl", "a") as f:
        f.write(json.dumps(record, default=float) + "\n")


def table(rows: list[dict[str, Any]], cols: list[str], fmt: dict[str, str] | None = None) -> str:
    """A markdown table of ``rows`` restricted to ``cols``."""
    fmt = fmt or {}
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(format(v, fmt[c]) if c in fmt and isinstance(v, int | float) else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)
