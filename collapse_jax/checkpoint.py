"""Orbax checkpoints of a batched chain state, with a checksum and a fallback to older steps.

``Checkpointer`` wraps an orbax ``CheckpointManager`` (keeps the last ``keep`` steps): each step
holds the batched ``ChainState`` (pool + parameters: plain arrays, no keys; keys are re-derived
from (chain id, generation)) and a JSON record of where the run is, with a bit-level checksum of
the state. Orbax commits a step atomically (a temporary directory renamed when complete). A latest
step that cannot be read, or whose checksum does not match, is discarded with a
``CheckpointWarning`` and the previous one is used. What a record holds and when steps are taken
is ``store.py``'s business.

References:
    Orbax documentation, "CheckpointManager" (atomic, asynchronous checkpointing of jax.Arrays).
"""

from __future__ import annotations

import functools
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from collapse_jax.config import ConfigError
from collapse_jax.mesh import all_agree, barrier
from collapse_jax.types import PyTree


class CheckpointWarning(UserWarning):
    """A checkpoint could not be used (corrupt or unreadable); an earlier one is used instead."""


# ----------------------------------------------------------------------------------------------
# Checksums


def _as_u32(x: jax.Array) -> jax.Array:
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32).reshape(-1)
    size = x.dtype.itemsize
    if size < 4:
        small = {1: jnp.uint8, 2: jnp.uint16}[size]
        return jax.lax.bitcast_convert_type(x, small).astype(jnp.uint32).reshape(-1)
    return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)


def _checksum_fn(tree: PyTree) -> jax.Array:
    """``[leaves, 2]`` uint32: plain and position-weighted wrapping sums of every leaf's bits."""
    out = []
    for leaf in jax.tree.leaves(tree):
        u = _as_u32(leaf)
        w = jnp.arange(u.shape[0], dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)
        out.append(jnp.stack([jnp.sum(u, dtype=jnp.uint32), jnp.sum(u * w, dtype=jnp.uint32)]))
    return jnp.stack(out)


@functools.lru_cache(maxsize=16)
def _checksum_program(mesh: Any) -> Callable:
    return jax.jit(_checksum_fn, out_shardings=NamedSharding(mesh, P()))


def state_checksum(state: PyTree) -> list[list[int]]:
    """Bit-level checksum of a (possibly sharded, multi-host) pytree of arrays, the same on every
    process. Integer sums wrap, so the result does not depend on how the arrays are sharded."""
    leaf = jax.tree.leaves(state)[0]
    sharding = getattr(leaf, "sharding", None)
    fn = _checksum_program(sharding.mesh) if isinstance(sharding, NamedSharding) else jax.jit(
        _checksum_fn)
    return np.asarray(fn(state)).astype(np.int64).tolist()


# ----------------------------------------------------------------------------------------------
# Checkpoints


class Checkpointer:
    """An orbax ``CheckpointManager`` of a batched chain state plus a JSON record, with fallback.

    Args:
        directory: where the steps live (created).
        keep: how many of the latest checkpoints to keep (>= 1).
    """

    def __init__(self, directory: str | Path, keep: int = 3):
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ConfigError(f"keep_checkpoints={keep!r}: must be an integer >= 1")
        self.directory = Path(directory).absolute()
        self.keep = keep
        self._mngr = None
        self._state_started: float | None = None  # the state save not yet seen committed
        self.state_seconds: float | None = None  # how long the last committed one took
        self._open()

    def _open(self) -> None:
        import orbax.checkpoint as ocp  # 0.3 s to import: only runs that write checkpoints

        self._ocp = ocp
        self._mngr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=self.keep, create=True, cleanup_tmp_directories=True
            ),
        )

    def steps(self) -> list[int]:
        """Finished steps, oldest first."""
        return sorted(self._mngr.all_steps())

    def save(self, step: int, state: PyTree | None, record: dict[str, Any]) -> None:
        """Save ``state`` (None: the record only) and ``record`` as checkpoint ``step``.

        Asynchronous: returns once the arrays are copied off the device; orbax commits the step
        atomically (a temporary directory renamed when complete).
        """
        ocp = self._ocp
        items = {"record": ocp.args.JsonSave(dict(record))}
        if state is not None:
            items["record"] = ocp.args.JsonSave({**record, "checksum": state_checksum(state)})
            items["state"] = ocp.args.StandardSave(state)
        started = time.monotonic()
        self._mngr.save(step, args=ocp.args.Composite(**items))
        if state is not None:
            self._state_started = started

    def state_save_seconds(self) -> float | None:
        """Seconds the last state save took from the call to its commit, once it has committed
        (checked at each call: an upper bound by the time between calls); None before."""
        if self._state_started is not None and not self._mngr.is_saving_in_progress():
            self.state_seconds = time.monotonic() - self._state_started
            self._state_started = None
        return self.state_seconds

    def restore_latest(
        self, target: Callable[[dict[str, Any]], PyTree | None]
    ) -> tuple[int, dict[str, Any], PyTree | None] | None:
        """The newest usable checkpoint: ``(step, record, state)``, or None when there is none.

        ``target(record)`` gives the abstract state to restore into (``ShapeDtypeStruct``s with
        shardings), or None when the record needs no state; it may raise ``ConfigError`` (e.g.
        the checkpoint belongs to a different experiment), which propagates. Any other failure
        (missing or truncated files, a checksum mismatch) warns with ``CheckpointWarning``, deletes
        that step and falls back to the one before.
        """
        ocp = self._ocp
        self._mngr.wait_until_finished()
        steps = sorted(self._mngr.all_steps(), reverse=True)
        bad: list[int] = []
        found = None
        for i, step in enumerate(steps):
            error = None
            try:
                record = self._mngr.restore(
                    step, args=ocp.args.Composite(record=ocp.args.JsonRestore())
                )["record"]
                if not isinstance(record, dict) or "generation" not in record:
                    raise ValueError("record missing or incomplete")
                abstract = target(record)
                state = None
                if abstract is not None:
                    state = self._mngr.restore(
                        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
                    )["state"]
                    if state_checksum(state) != record.get("checksum"):
                        raise ValueError("checksum of the restored state does not match")
            except ConfigError:
                raise
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint falls back
                error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if not all_agree(error is None):
                error = error or "unreadable on another process"
            if error is None:
                found = (step, record, state)
                break
            nxt = steps[i + 1] if i + 1 < len(steps) else None
            warnings.warn(
                f"checkpoint step {step} in {self.directory} is corrupt or unreadable ({error}); "
                + (f"falling back to step {nxt}" if nxt is not None
                   else "no earlier checkpoint: starting from the beginning"),
                CheckpointWarning, stacklevel=2,
            )
            bad.append(step)
        if bad:
            self._discard(bad)
        return found

    def _discard(self, steps: Sequence[int]) -> None:
        """Delete unusable steps (so later saves can reuse their numbers) and reopen."""
        self._mngr.close()
        if jax.process_index() == 0:
            for step in steps:
                for path in self.directory.glob(f"{step}*"):
                    if path.name == str(step) or path.name.startswith(f"{step}."):
                        shutil.rmtree(path, ignore_errors=True)
        barrier(f"collapse_jax_discard_{steps[0]}")
        self._open()

    def wait(self) -> None:
        """Block until pending asynchronous saves are committed."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        if self._mngr is not None:
            self._mngr.wait_until_finished()
            self._mngr.close()
            self._mngr = None
