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

One CPU device per core: JAX's CPU backend is one device by default, and one device runs a
batch of vmapped chains on about one core. ``--xla_force_host_platform_device_count=K`` makes K
CPU devices, over which a sweep shards its chains (``mesh.AXIS``) like over GPUs, so every core
runs chains: the 10,000-seed Gaussian sweep's ``accumulate_subsample`` chains ran 1.4x (n = 100)
and 1.5x (n = 10) faster per chain-generation with 2 devices on 2 cores (benchmarks/README.md).
K is the cores this process may use, at most ``MAX_CPU_DEVICES`` (a run pads its chains to at
least two per device); ``COLLAPSE_JAX_CPU_DEVICES=K`` sets it, and an ``XLA_FLAGS`` that names
the device count is kept. Results are the same bits at the same chains per device; with another
batch per device, values computed through ``exp`` / ``log`` can differ in the last 1-2 ulp (KDE,
GMM, the Gaussian's ``logdet_ratio``; ``programs._sharded``).
"""

from __future__ import annotations

import os
import warnings

FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",
         "--xla_cpu_multi_thread_eigen=false")

#: Environment variable: number of CPU devices (default: the usable cores, at most
#: ``MAX_CPU_DEVICES``).
ENV_CPU_DEVICES = "COLLAPSE_JAX_CPU_DEVICES"

#: Most CPU devices made by default.
MAX_CPU_DEVICES = 8

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def cpu_devices() -> int:
    """CPU devices to make: ``COLLAPSE_JAX_CPU_DEVICES``, else the cores this process may use
    (at most ``MAX_CPU_DEVICES``). Raises ``ValueError`` naming the variable for a bad value."""
    value = os.environ.get(ENV_CPU_DEVICES, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{ENV_CPU_DEVICES}={value!r}: must be a positive integer (the "
                             f"number of CPU devices; unset: one per core, at most "
                             f"{MAX_CPU_DEVICES})")
        return int(value)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_CPU_DEVICES))


def apply_cpu_defaults() -> None:
    """Add each of ``FLAGS``, and one CPU device per core (``cpu_devices``), to ``XLA_FLAGS``
    unless ``XLA_FLAGS`` already sets it either way."""
    flags = os.environ.get("XLA_FLAGS", "")
    devices = cpu_devices()
    wanted = FLAGS + ((f"{DEVICE_COUNT_FLAG}={devices}",) if devices > 1 else ())
    missing = [f for f in wanted if f.split("=")[0] not in flags]
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
            "collapse_jax was imported after JAX started its CPU backend, so its XLA CPU "
            f"settings ({' '.join(missing)}: a deadlock workaround and one device per core) "
            "are not active; import collapse_jax first or set XLA_FLAGS yourself",
            RuntimeWarning, stacklevel=3)
