"""Shared helpers of the benchmark scripts: environment, timing, JSON lines, tables, the numpy
baseline as a subprocess, timed ``run_sweep`` calls, figures.

Importing collapse_jax first applies its XLA CPU flags (``collapse_jax/_xla.py``: a deadlock
workaround) before JAX starts a backend.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
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
        "devices": jax.device_count(),
        "platform": jax.default_backend(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
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


# ----------------------------------------------------------------------------------------------
# The numpy baseline, run as users have it


#: This machine's OpenBLAS overrides; a user's numpy runs without them.
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def baseline_env(mode: str = "user") -> dict[str, str]:
    """Environment of a baseline subprocess: ``user`` drops ``OPENBLAS_OVERRIDES`` (as
    ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``), ``inherit`` keeps this process's."""
    if mode not in ("user", "inherit"):
        raise ValueError(f"baseline env {mode!r}: use 'user' or 'inherit'")
    if mode == "inherit":
        return dict(os.environ)
    return {k: v for k, v in os.environ.items() if k not in OPENBLAS_OVERRIDES}


class BaselineProcess:
    """``baseline_numpy.py --serve`` in a subprocess with ``baseline_env(mode)``.

    ``run(**request)`` sends one request (the arguments of ``baseline_numpy.run``) and returns
    the answer; the subprocess measures its own seconds, so its start-up is not timed, and the
    calling process waits idle meanwhile. ``info``: the env mode, the OpenBLAS variables and the
    BLAS the subprocess runs with.
    """

    def __init__(self, mode: str = "user"):
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "baseline_numpy.py"), "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=baseline_env(mode))
        self.info = {"baseline_env": mode, **self._read()}

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"baseline_numpy.py --serve exited ({self.proc.poll()})")
        return json.loads(line)

    def run(self, **request: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)

    def __enter__(self) -> BaselineProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------
# collapse_jax sweeps


def hparams(model: str, **overrides: float) -> dict[str, float]:
    """The model's registered hyperparameter defaults with ``overrides``."""
    from collapse_jax.model import get_model_spec

    return {**get_model_spec(model).hparams, **overrides}


def plan(static: Any, num_chains: int, budget_gb: float, chunk_size: int | None = None) -> Any:
    """``run_sweep``'s plan for ``num_chains`` chains within ``budget_gb`` GiB per device."""
    from collapse_jax.model import make_source
    from collapse_jax.plan import plan_sweep

    args = make_source(static).load(static)
    return plan_sweep(static, args, num_chains, chunk_size=chunk_size,
                      budget=int(budget_gb * 2**30))


def timed_sweep(static: Any, root_seed: int, chain_ids: Any, hp: dict[str, float],
                sweep_plan: Any = None) -> dict[str, Any]:
    """One ``run_sweep`` call: wall seconds of the whole call (planning, compile if not cached,
    run, fetching the metrics), its compile and run seconds, chunk size and metrics."""
    from collapse_jax.model import make_source
    from collapse_jax.sweep import run_sweep

    args = make_source(static).load(static)
    t0 = time.perf_counter()
    r = run_sweep(static, jax.random.key(root_seed), chain_ids, hp, args, plan=sweep_plan)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "compile_s": r.compile_seconds, "run_s": r.run_seconds,
            "chunk_size": r.chunk_size, "metrics": r.metrics}


def interleave(fns: dict[str, Callable[[int], Any]], repeats: int) -> dict[str, list[Any]]:
    """``repeats`` rounds, each calling every ``fns[name](round)`` in turn: repeats of the
    things compared alternate, so a change of machine load hits all of them alike."""
    out: dict[str, list[Any]] = {k: [] for k in fns}
    for r in range(repeats):
        for k, fn in fns.items():
            out[k].append(fn(r))
    return out


def pyplot() -> Any:
    """matplotlib.pyplot with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def savefig(fig: Any, name: str) -> Path:
    """Save ``fig`` as ``benchmarks/results/NAME.png``."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
