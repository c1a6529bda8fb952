"""Devices and hosts: the chain mesh, ``jax.distributed`` start-up, sharded puts, local rows and
agreement between processes.

The chain axis of every batch is sharded over a 1-d ``jax.sharding.Mesh`` with axis ``'chains'``
(``NamedSharding(mesh, P('chains'))``); host data and the root key are replicated. One config runs
on 1 or N devices, or N hosts, unchanged. No ``pmap``.

References:
    JAX documentation, "Distributed arrays and automatic parallelization" and "Using JAX in
    multi-host and multi-process environments".
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from collapse_jax.config import ConfigError
from collapse_jax.types import PyTree

#: Name of the mesh axis the chain axis is sharded over.
AXIS = "chains"

#: Environment variables read by ``initialize_distributed`` (the standard JAX ones work too).
ENV_COORDINATOR = "COLLAPSE_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "COLLAPSE_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "COLLAPSE_JAX_PROCESS_ID"


def make_mesh(devices: Any = None) -> Mesh:
    """A 1-d mesh with axis ``'chains'`` over ``devices`` (default: every device of every host)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (AXIS,))


def env_int(name: str) -> int | None:
    """The integer value of environment variable ``name`` (None when unset or empty)."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: must be an integer") from None


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
) -> bool:
    """Join a multi-host run with ``jax.distributed.initialize``; call before any JAX computation.

    Arguments default to the environment: ``COLLAPSE_JAX_COORDINATOR`` (``host:port`` of process
    0), ``COLLAPSE_JAX_NUM_PROCESSES`` and ``COLLAPSE_JAX_PROCESS_ID``. With none of them set and
    ``auto`` False nothing happens (a single-process run). ``auto=True`` calls
    ``jax.distributed.initialize()`` with no arguments, which detects TPU pods, SLURM and the
    standard ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` variables.

    Returns:
        True when ``jax.distributed.initialize`` was called.
    """
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else env_int(ENV_PROCESS_ID)
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ConfigError(
            "multi-host: coordinator, num_processes and process_id must be given together "
            f"(got coordinator={coordinator!r}, num_processes={num_processes!r}, "
            f"process_id={process_id!r}); set {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, "
            f"{ENV_PROCESS_ID} or --coordinator/--num-processes/--process-id"
        )
    if all(given):
        if not 0 <= process_id < num_processes:
            raise ConfigError(f"process_id={process_id}: must lie in [0, num_processes="
                              f"{num_processes})")
        jax.distributed.initialize(coordinator_address=coordinator,
                                   num_processes=num_processes, process_id=process_id)
        return True
    if auto:
        jax.distributed.initialize()
        return True
    return False


def put_sharded(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array every process holds in full (multi-host safe)."""
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def put_replicated(tree: PyTree, mesh: Mesh) -> PyTree:
    """Every leaf of a host pytree replicated on every device of ``mesh``."""
    rep = NamedSharding(mesh, P())
    return jax.tree.map(lambda x: put_sharded(np.asarray(x), rep), tree)


def local_rows(tree: PyTree, num: int) -> tuple[np.ndarray, PyTree]:
    """This process's rows (leading axis) of chain-sharded global arrays, real rows only.

    Returns the row indices (into the batch) and the tree of host arrays of those rows; rows at
    or past ``num`` (padding chains) are dropped.
    """
    leaves, treedef = jax.tree.flatten(tree)
    first = leaves[0]
    if first.is_fully_addressable:
        host = jax.device_get(leaves)
        rows = np.arange(min(num, first.shape[0]))
        return rows, jax.tree.unflatten(treedef, [h[: rows.size] for h in host])
    # multi-host: one shard per local device along the chain axis
    starts = sorted({s.index[0].start or 0 for s in first.addressable_shards})
    per_leaf = []
    for leaf in leaves:
        by_start = {(s.index[0].start or 0): s.data for s in leaf.addressable_shards}
        per_leaf.append([by_start[s] for s in starts])
    per_leaf = jax.device_get(per_leaf)
    sizes = [a.shape[0] for a in per_leaf[0]]
    rows = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, sizes, strict=True)])
    keep = rows < num
    host = [np.concatenate(parts)[keep] for parts in per_leaf]
    return rows[keep], jax.tree.unflatten(treedef, host)


def barrier(name: str) -> None:
    """Wait for every process (no-op on one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def first_process_value(value: int) -> int:
    """Process 0's ``value`` on every process (itself on one process)."""
    if jax.process_count() == 1:
        return value
    return int(multihost_utils.broadcast_one_to_all(np.asarray(value, np.int32)))


def all_agree(ok: bool) -> bool:
    """True when ``ok`` holds on every process."""
    if jax.process_count() == 1:
        return ok
    flags = multihost_utils.process_allgather(np.asarray([int(ok)], np.int32))
    return bool(np.all(flags))
