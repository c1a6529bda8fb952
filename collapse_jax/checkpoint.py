"""Never lose work: orbax checkpoints of the batched chain state and the results table in parts.

A run with an output directory keeps two things there, both written atomically:

- ``parts/``: the results table's numeric columns, one ``.npz`` per (group, chain chunk,
  generation chunk, process), written atomically at every generation-chunk boundary
  (``table.save_columns``). A killed run keeps every finished generation; parts after the point a
  resume restarts from are deleted first, so the merged table never has duplicate or missing
  rows.
- ``checkpoints/``: an orbax ``CheckpointManager`` (keeps the last ``keep``) holding, after every
  generation chunk, the batched ``ChainState`` (pool + parameters: plain arrays, no keys; keys are
  re-derived from (chain id, generation)) and a JSON record of where the run is (group, chain
  chunk, next generation, the plan and a fingerprint of the experiment) with a checksum of the
  state. A latest checkpoint that cannot be read, or whose checksum does not match, is discarded
  with a ``CheckpointWarning`` and the previous one is used.

Order at each boundary: the part is written, then the checkpoint that says it is done. Resuming
from checkpoint ``(group, chunk, generation)`` first deletes every part after that point, then
reruns from there: the final table is bit-identical to an uninterrupted run's.

On a multi-host run every process writes its own parts (``-p<process>``) and its own shards of the
state (orbax coordinates the save); ``finish`` merges each process's parts into
``metrics-part-<process>.npz`` and process 0 merges those into the table.

References:
    Orbax documentation, "CheckpointManager" (atomic, asynchronous checkpointing of jax.Arrays).
"""

from __future__ import annotations

import functools
import re
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from collapse_jax.config import ConfigError
from collapse_jax.tables import load_columns, save_columns
from collapse_jax.types import PyTree

#: Helper columns of the parts (dropped from the final table): group index and chain position.
ORDER_COLUMNS = ("_group", "_chain")

_PART = re.compile(r"^g(\d+)-c(\d+)-t(\d+)-p(\d+)\.npz$")

#: Largest share of the run's time state checkpoints may take: after a state save that took
#: ``s`` seconds to commit (measured), the next one waits at least ``s / CHECKPOINT_SHARE``
#: (and at least ``checkpoint_seconds``). A 2 GB pool (5,000 accumulate chains, n = 100) takes
#: ~10 s to write on this machine's disk: every 100 s, not every 30 s.
CHECKPOINT_SHARE = 0.1


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
# Multi-host helpers


def barrier(name: str) -> None:
    """Wait for every process (no-op on one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _all_agree_first(flag: bool) -> bool:
    """Process 0's ``flag`` on every process."""
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag, np.int32)))


def _all_agree(ok: bool) -> bool:
    """True when ``ok`` holds on every process."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray([int(ok)], np.int32))
    return bool(np.all(flags))


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
        import orbax.checkpoint as ocp

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
            if not _all_agree(error is None):
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


# ----------------------------------------------------------------------------------------------
# Results parts


def part_name(group: int, chain_chunk: int, gen_start: int, process: int) -> str:
    """File name of one results part; names sort in run order."""
    return f"g{group:04d}-c{chain_chunk:06d}-t{gen_start:07d}-p{process:04d}.npz"


def parse_part_name(name: str) -> tuple[int, int, int, int] | None:
    """``(group, chain_chunk, gen_start, process)`` of a part file name, or None."""
    m = _PART.match(name)
    return tuple(int(x) for x in m.groups()) if m else None  # type: ignore[return-value]


def finalize_table(table: pd.DataFrame) -> pd.DataFrame:
    """Drop the helper columns."""
    return table.drop(columns=[c for c in ORDER_COLUMNS if c in table]).reset_index(drop=True)


class RunStore:
    """Results parts and checkpoints of one experiment run in ``out_dir``.

    Args:
        out_dir: the run's output directory.
        fingerprint: what identifies the run (the experiment fields that change results); a
            resume from a checkpoint with a different fingerprint raises ``ConfigError``.
        keep: checkpoints kept.
        resume: continue from the latest checkpoint; False clears ``parts/`` and
            ``checkpoints/`` first.
        every_seconds: minimum seconds between checkpoints (0: at every generation chunk). When
            > 0, also at least ``1 / CHECKPOINT_SHARE`` times the last state save's measured
            duration, so writing a large state cannot take more than about that share of the
            run. Parts are written at every chunk regardless; the final position is always
            checkpointed.
    """

    def __init__(self, out_dir: str | Path, fingerprint: dict[str, Any], keep: int = 3,
                 resume: bool = False, every_seconds: float = 0.0):
        self.out = Path(out_dir)
        self.parts = self.out / "parts"
        self.fingerprint = fingerprint
        self.process = jax.process_index()
        self.nproc = jax.process_count()
        if not resume and self.process == 0:
            for sub in (self.parts, self.out / "checkpoints"):
                shutil.rmtree(sub, ignore_errors=True)
        barrier("collapse_jax_runstore_init")
        self.parts.mkdir(parents=True, exist_ok=True)
        self.ckpt = Checkpointer(self.out / "checkpoints", keep)
        self.next_step = 0
        self.every_seconds = every_seconds
        self._last_save = time.monotonic()
        self._pending: dict[str, Any] | None = None  # last boundary not yet checkpointed

    def restore(
        self, target: Callable[[dict[str, Any]], PyTree | None]
    ) -> tuple[dict[str, Any], PyTree | None] | None:
        """The latest usable checkpoint ``(record, state)`` (None: start from the beginning).

        Deletes this process's parts after the restored point (work that will be redone).
        """

        def checked(record):
            saved = record.get("fingerprint")
            if saved != self.fingerprint:
                diff = sorted(k for k in set(saved or {}) | set(self.fingerprint)
                              if (saved or {}).get(k) != self.fingerprint.get(k))
                raise ConfigError(
                    f"--resume: {self.ckpt.directory} holds a checkpoint of a different run "
                    f"(differs in: {', '.join(diff) or 'everything'}); use another --out or run "
                    f"without --resume to start over"
                )
            return target(record)

        found = self.ckpt.restore_latest(checked)
        if found is None:
            self._prune(None)
            return None
        step, record, state = found
        self.next_step = step + 1
        self._prune((record["group"], record["chain_chunk"], record["generation"]))
        return record, state

    def _prune(self, position: tuple[int, int, int] | None) -> None:
        for path in self.parts.iterdir():
            key = parse_part_name(path.name)
            if key is None or key[3] != self.process:
                continue
            if position is None or _after(key[:3], position):
                path.unlink()

    def chunk_done(
        self, group: int, columns: dict[str, np.ndarray], chain_chunk: int, gen_start: int,
        gen_stop: int, generations: int, state: PyTree, plan: dict[str, Any]
    ) -> None:
        """Write the rows of a finished generation chunk (numeric ``columns``) as a part, then
        checkpoint the state after it (when due)."""
        save_columns(self.parts / part_name(group, chain_chunk, gen_start, self.process), columns)
        record = {"fingerprint": self.fingerprint, "group": group, "chain_chunk": chain_chunk,
                  "generation": gen_stop, "plan": plan}
        self._pending = record
        # the same decision on every process (process 0's clock), so collective saves match
        interval = self.every_seconds
        if interval > 0:
            interval = max(interval, (self.ckpt.state_save_seconds() or 0.0) / CHECKPOINT_SHARE)
        due = time.monotonic() - self._last_save >= interval
        if self.nproc > 1:
            due = _all_agree_first(due)
        if due:
            # after a chunk's last generation only the position is needed, not the state
            self._save(state if gen_stop < generations else None)

    def _save(self, state: PyTree | None) -> None:
        self.ckpt.save(self.next_step, state, self._pending)
        self.next_step += 1
        self._pending = None
        self._last_save = time.monotonic()

    def finish(self) -> dict[str, np.ndarray]:
        """Merge the parts into the run's columns, sorted (process 0: every process's rows).

        On a multi-host run each process writes ``metrics-part-<process>.npz`` and process 0
        merges them; other processes return their own rows.
        """
        if self._pending is not None and self._pending["generation"] >= self._pending["plan"][
                "generations"]:
            self._save(None)  # the run's end: a resume of a finished run has nothing to do
        self.ckpt.wait()
        mine = sorted(p for p in self.parts.iterdir()
                      if (k := parse_part_name(p.name)) is not None and k[3] == self.process)
        local = load_columns(mine)
        if self.nproc == 1:
            return local
        save_columns(self.out / f"metrics-part-{self.process}.npz", local)
        barrier("collapse_jax_parts_merged")
        if self.process != 0:
            return local
        return load_columns([self.out / f"metrics-part-{p}.npz" for p in range(self.nproc)])

    def close(self) -> None:
        self.ckpt.close()


def _after(key: tuple[int, int, int], position: tuple[int, int, int]) -> bool:
    """Is the part starting at ``key`` not covered by a checkpoint at ``position``?"""
    g, c, t = key
    pg, pc, pt = position
    return (g, c) > (pg, pc) or ((g, c) == (pg, pc) and t >= pt)
