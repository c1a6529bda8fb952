"""XLA CPU defaults collapse_jax needs, applied on import (before the first computation).

``--xla_cpu_enable_concurrency_optimized_scheduler=false``: with jaxlib 0.10.2 the CPU runtime's
concurrency-optimised scheduler deadlocked vmapped chain programs that run several LAPACK custom
calls (eigh, Cholesky) side by side: every XLA worker idle, the host blocked in
``BlockUntilReady`` forever (reproduced: 2,000 Gaussian chains, d = 5, 20 generations, all five
metrics hung on every run; with the flag 9/9 runs finished). ``--xla_cpu_multi_thread_eigen=false``
did not help. The flag is only added when ``XLA_FLAGS`` does not mention it, so a user can turn
the scheduler back on with ``XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=true``.
XLA reads ``XLA_FLAGS`` when the CPU backend starts, so this must run before any computation:
import collapse_jax before running JAX code (a warning says when that was too late).
"""

from __future__ import annotations

import os
import warnings

FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def apply_cpu_defaults() -> None:
    """Add ``FLAG`` to ``XLA_FLAGS`` unless it is already set either way."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_enable_concurrency_optimized_scheduler" in flags:
        return
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
    try:
        from jax._src import xla_bridge

        started = bool(getattr(xla_bridge, "_backends", None))
    except ImportError:  # pragma: no cover - private API moved
        started = False
    if started:
        warnings.warn(
            "collapse_jax was imported after JAX started its CPU backend, so the workaround for "
            f"an XLA CPU deadlock ({FLAG}) is not active; import collapse_jax first or set "
            "XLA_FLAGS yourself", RuntimeWarning, stacklevel=3)
