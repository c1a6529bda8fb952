"""XLA CPU defaults collapse_jax needs, applied on import (before the first computation).

With jaxlib 0.10.2 on this 2-core machine, vmapped chain programs that run several LAPACK custom
calls (eigh, Cholesky) deadlocked at random: every XLA worker idle, the host blocked in
``BlockUntilReady`` forever. Two reproducers (both in ``tests/models/test_gaussian_fast.py``'s
setting): 2,000 sample-path Gaussian chains, d = 5, 20 generations, all five metrics; and 1,000
chains with n = 4 <= d = 5. Each flag alone still hung one of them
(``--xla_cpu_multi_thread_eigen=false`` the first, the scheduler flag the second, 2 of 3 runs);
with both, 10/10 runs finished. The same class of wedge is reported upstream for vmap graphs on
XLA CPU. A flag is only added when ``XLA_FLAGS`` does not mention it, so users can override
either. XLA reads ``XLA_FLAGS`` when the CPU backend starts, so this must run before any
computation: import collapse_jax before running JAX code (a warning says when that was too late).
"""

from __future__ import annotations

import os
import warnings

FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",
         "--xla_cpu_multi_thread_eigen=false")


def apply_cpu_defaults() -> None:
    """Add each of ``FLAGS`` to ``XLA_FLAGS`` unless ``XLA_FLAGS`` already sets it either way."""
    flags = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in FLAGS if f.split("=")[0] not in flags]
    if not missing:
        return
    os.environ["XLA_FLAGS"] = " ".join([flags, *missing]).strip()
    try:
        from jax._src import xla_bridge  # private: only to tell whether JAX has started

        started = bool(getattr(xla_bridge, "_backends", None))
    except ImportError:  # pragma: no cover - private API moved
        started = False
    if started:
        warnings.warn(
            "collapse_jax was imported after JAX started its CPU backend, so the workaround "
            f"for an XLA CPU deadlock ({' '.join(missing)}) is not active; import collapse_jax "
            "first or set XLA_FLAGS yourself", RuntimeWarning, stacklevel=3)
