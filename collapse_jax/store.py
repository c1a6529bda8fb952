"""Never lose work: a run's results parts, snapshot samples and checkpoints in its directory.

A run with an output directory keeps there, all written atomically:

- ``metrics/``: the results table as a Parquet dataset, one file per (group, chain chunk,
  generation chunk, process) written at every generation-chunk boundary (``tables.write_part``):
  the table a reader loads (``pandas.read_parquet(DIR / "metrics")``), and what a resume keeps. A
  killed run keeps every finished generation; parts after the point a resume restarts from are
  deleted first, so the table never has duplicate or missing rows.
- ``samples/``: the snapshot samples of each group's first chain, one ``.npz`` per generation.
- ``checkpoints/``: ``checkpoint.Checkpointer`` steps holding, after a generation chunk, the
  batched ``ChainState`` and a record of where the run is (group, chain chunk, next generation,
  the plan and the run's fingerprint).

Order at each boundary: the part is written, then the checkpoint that says it is done. Resuming
from checkpoint ``(group, chunk, generation)`` first deletes every part after that point, then
reruns from there: the final table is bit-identical to an uninterrupted run's.

On a multi-host run every process writes its own parts (``-p<process>``) and its own shards of the
state (orbax coordinates the save); ``finish`` waits for every process and process 0 reads the
whole dataset.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pyarrow.parquet as pq

from collapse_jax.checkpoint import Checkpointer
from collapse_jax.config import NOT_RESULT_FIELDS, ConfigError, Experiment
from collapse_jax.files import clean_json
from collapse_jax.mesh import barrier, first_process_value
from collapse_jax.results import RUN_FILES
from collapse_jax.tables import load_columns, save_arrays, write_part
from collapse_jax.types import PyTree

_PART = re.compile(r"^g(\d+)-c(\d+)-t(\d+)-p(\d+)\.parquet$")

#: The folder of a run's table dataset (``DIR/metrics``).
PARTS = "metrics"
_SAMPLES = re.compile(r"^g(\d+)-t(\d+)\.npz$")

#: Largest share of the run's time state checkpoints may take: after a state save that took
#: ``s`` seconds to commit (measured), the next one waits at least ``s / CHECKPOINT_SHARE``
#: (and at least ``checkpoint_seconds``).
CHECKPOINT_SHARE = 0.1

#: Parts of finished chunks waiting to be written at most (then the run waits for the oldest).
MAX_PENDING_PARTS = 8

#: Bytes of written rows a ``RunStore`` keeps for ``finish``, which then need not read its own
#: parts back (a 9M-row sweep's: ~4 s); past this it reads them as before.
HOLD_BYTES = 2 * 2**30


# ----------------------------------------------------------------------------------------------
# The output directory

def check_output_dir(
    out_dir: str | Path, exp: Experiment, *, overwrite: bool = False, resume: bool = False,
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
    new = _result_fields(json.loads(json.dumps(clean_json(exp.to_dict()))))
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


def _result_fields(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in NOT_RESULT_FIELDS}


def _differences(old: Any, new: dict[str, Any], limit: int = 3) -> str:
    if not isinstance(old, dict):
        return ""
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    parts = [f"{k}: {json.dumps(old.get(k))} -> {json.dumps(new.get(k))}" for k in keys[:limit]]
    more = f", +{len(keys) - limit} more" if len(keys) > limit else ""
    return f" (differs in {', '.join(parts)}{more})" if parts else ""


# ----------------------------------------------------------------------------------------------
# Parts and samples


def stored_progress(out_dir: str | Path, generations: int) -> tuple[int, int]:
    """``(chain-generations, whole chains)`` of this process's parts in ``out_dir`` (what an
    interrupted run keeps for ``--resume``); reads only the chain column."""
    parts = Path(out_dir) / PARTS
    rows, per_chain = 0, {}
    for path in sorted(parts.glob("*.parquet")) if parts.is_dir() else []:
        if (key := parse_part_name(path.name)) is None or key[3] != jax.process_index():
            continue
        chains = pq.read_table(path, columns=["_chain"]).column(0).to_numpy()
        rows += len(chains)
        for c, k in zip(*np.unique(chains, return_counts=True), strict=True):
            per_chain[key[0], int(c)] = per_chain.get((key[0], int(c)), 0) + int(k)
    return rows, sum(1 for v in per_chain.values() if v == generations)


def part_name(group: int, chain_chunk: int, gen_start: int, process: int) -> str:
    """File name of one results part; names sort in run order."""
    return f"g{group:04d}-c{chain_chunk:06d}-t{gen_start:07d}-p{process:04d}.parquet"


def parse_part_name(name: str) -> tuple[int, int, int, int] | None:
    """``(group, chain_chunk, gen_start, process)`` of a part file name, or None.

    >>> parse_part_name(part_name(1, 2, 30, 0)), parse_part_name("notes.txt")
    ((1, 2, 30, 0), None)
    """
    m = _PART.match(name)
    return tuple(int(x) for x in m.groups()) if m else None  # type: ignore[return-value]


def flatten_samples(tree: Any) -> dict[str, np.ndarray]:
    """A sample pytree (an array, or nested dicts of arrays) as flat ``.npz`` entries.

    >>> sorted(flatten_samples({"tokens": np.zeros(2), "x": {"y": np.ones(1)}}))
    ['tokens', 'x/y']
    """
    if isinstance(tree, Mapping):
        return {f"{k}/{sub}".rstrip("/"): v for k, t in tree.items()
                for sub, v in flatten_samples(t).items()}
    return {"": np.asarray(tree)}


def unflatten_samples(flat: Mapping[str, np.ndarray]) -> Any:
    """The inverse of ``flatten_samples``.

    >>> unflatten_samples(flatten_samples({"a": np.zeros(1), "b": {"c": np.ones(1)}}))["b"]["c"]
    array([1.])
    """
    if set(flat) == {""}:
        return flat[""]
    out: dict[str, Any] = {}
    for key, v in flat.items():
        node = out
        *path, last = key.split("/")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = v
    return out


def load_samples(directory: str | Path) -> dict[int, dict[int, Any]]:
    """``{group: {generation: samples}}`` from a run's ``samples/`` directory."""
    out: dict[int, dict[int, Any]] = {}
    directory = Path(directory)
    for path in sorted(directory.glob("*.npz")) if directory.is_dir() else []:
        m = _SAMPLES.match(path.name)
        if m:
            with np.load(path) as z:
                out.setdefault(int(m.group(1)), {})[int(m.group(2))] = unflatten_samples(
                    {k: z[k] for k in z.files})
    return out


def finished_columns(out_dir: str | Path, rows_per_group: int) -> dict[str, np.ndarray]:
    """This process's rows of the groups whose every row is in ``out_dir/metrics`` (what a failed
    run has finished), sorted; ``rows_per_group`` = chains x generations of a group."""
    parts = Path(out_dir) / PARTS
    names = sorted(parts.glob("*.parquet")) if parts.is_dir() else []
    mine = [p for p in names if (k := parse_part_name(p.name)) and k[3] == jax.process_index()]
    cols = load_columns(mine)
    if not cols:
        return {}
    groups, counts = np.unique(cols["_group"], return_counts=True)
    keep = np.isin(cols["_group"], groups[counts == rows_per_group])
    return {k: v[keep] for k, v in cols.items()}


class RunStore:
    """Results parts and checkpoints of one experiment run in ``out_dir``.

    Args:
        out_dir: the run's output directory.
        fingerprint: what identifies the run (the experiment fields that change results); a
            resume from a checkpoint with a different fingerprint raises ``ConfigError``.
        keep: checkpoints kept.
        resume: continue from the latest checkpoint; False clears ``metrics/``, ``samples/``
            and ``checkpoints/`` first.
        every_seconds: minimum seconds between checkpoints (0: at every generation chunk). When
            > 0, also at least ``1 / CHECKPOINT_SHARE`` times the last state save's measured
            duration, so writing a large state cannot take more than about that share of the
            run. Parts are written at every chunk regardless; the final position is always
            checkpointed.
    """

    def __init__(self, out_dir: str | Path, fingerprint: dict[str, Any], keep: int = 3,
                 resume: bool = False, every_seconds: float = 0.0):
        self.out = Path(out_dir)
        self.parts = self.out / PARTS
        self.fingerprint = fingerprint
        self.process = jax.process_index()
        self.nproc = jax.process_count()
        if not resume and self.process == 0:
            for sub in (self.parts, self.out / "samples", self.out / "checkpoints"):
                shutil.rmtree(sub, ignore_errors=True)
        barrier("collapse_jax_runstore_init")
        self.parts.mkdir(parents=True, exist_ok=True)
        self.samples = self.out / "samples"
        self.ckpt = Checkpointer(self.out / "checkpoints", keep)
        self.next_step = 0
        self.every_seconds = every_seconds
        self._last_save = time.monotonic()
        self._pending: dict[str, Any] | None = None  # last boundary not yet checkpointed
        # parts are written on a thread while the next chunk runs; every checkpoint waits for
        # the parts before it, so a checkpoint never claims rows that are not on disk
        self._writer = ThreadPoolExecutor(1, "collapse-jax-parts")
        self._writes: list[Future] = []
        self._held: dict[str, dict[str, np.ndarray]] | None = {}  # part name -> its columns
        self._held_bytes = 0

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
        gen_stop: int, generations: int, state: PyTree, plan: dict[str, Any],
        samples: Mapping[int, Any] | None = None, labels: Mapping[str, str] | None = None,
    ) -> None:
        """Write the rows of a finished generation chunk (numeric ``columns``, with the text
        ``labels`` of its group) and its snapshot samples, then checkpoint the state after it
        (when due)."""
        if len(self._writes) >= MAX_PENDING_PARTS:  # bound the rows held in memory
            self._writes.pop(0).result()
        name = part_name(group, chain_chunk, gen_start, self.process)
        self._writes.append(self._writer.submit(write_part, self.parts / name, columns, labels))
        self._hold(name, columns)
        if self.process == 0:
            for g, tree in (samples or {}).items():
                save_arrays(self.samples / f"g{group:04d}-t{g:07d}.npz", flatten_samples(tree))
        record = {"fingerprint": self.fingerprint, "group": group, "chain_chunk": chain_chunk,
                  "generation": gen_stop, "plan": plan}
        self._pending = record
        # the same decision on every process (process 0's clock), so collective saves match
        interval = self.every_seconds
        if interval > 0:
            interval = max(interval, (self.ckpt.state_save_seconds() or 0.0) / CHECKPOINT_SHARE)
        due = time.monotonic() - self._last_save >= interval
        due = bool(first_process_value(int(due)))
        if due:
            # after a chunk's last generation only the position is needed, not the state
            self._save(state if gen_stop < generations else None)

    def _hold(self, name: str, columns: dict[str, np.ndarray]) -> None:
        """Keep a written part's columns for ``finish`` while they fit ``HOLD_BYTES``."""
        if self._held is not None:
            self._held[name] = columns
            self._held_bytes += sum(np.asarray(v).nbytes for v in columns.values())
            if self._held_bytes > HOLD_BYTES:
                self._held = None  # too many rows to keep: finish reads the parts back

    def flush(self, state: PyTree | None) -> None:
        """Checkpoint the last finished boundary now (``state`` after it; None when its chain
        chunk is complete), whether or not it was due: before an orderly stop."""
        if self._pending is not None:
            self._save(state)
            self.ckpt.wait()

    def _drain(self) -> None:
        """Wait for every part being written (raising a failed write's error)."""
        while self._writes:
            self._writes.pop(0).result()

    def _save(self, state: PyTree | None) -> None:
        self._drain()
        self.ckpt.save(self.next_step, state, self._pending)
        self.next_step += 1
        self._pending = None
        self._last_save = time.monotonic()

    def load_samples(self) -> dict[int, dict[int, Any]]:
        """Every group's snapshot samples on disk: ``{group: {generation: samples}}``."""
        return load_samples(self.samples)

    def finish(self) -> dict[str, np.ndarray]:
        """The run's columns from its parts, sorted: process 0 reads every process's parts
        (after all have written theirs), other processes return their own rows. Parts this
        store wrote come from memory (``HOLD_BYTES``; one process: while the last ones are
        still being written), the others (before a resume, other processes') from disk."""
        cols = None
        if self.nproc == 1 and self._held is not None:  # parts on disk are whole (atomic)
            names = {p.name for p in self.parts.iterdir() if parse_part_name(p.name)}
            cols = load_columns([self.parts / n for n in sorted(names | set(self._held))],
                                self._held)
        self._drain()
        if self._pending is not None and self._pending["generation"] >= self._pending["plan"][
                "generations"]:
            self._save(None)  # the run's end: a resume of a finished run has nothing to do
        self.ckpt.wait()
        barrier("collapse_jax_parts_written")
        if cols is not None:
            return cols
        names = sorted(p for p in self.parts.iterdir() if parse_part_name(p.name) is not None)
        if self.process != 0:
            names = [p for p in names if parse_part_name(p.name)[3] == self.process]
        return load_columns(names, self._held)

    def close(self) -> None:
        """Finish writing the parts (also when the run failed: nothing finished is lost) and
        the checkpoints."""
        self._writer.shutdown(wait=True)  # waits for every queued part
        self.ckpt.close()


def _after(key: tuple[int, int, int], position: tuple[int, int, int]) -> bool:
    """Is the part starting at ``key`` not covered by a checkpoint at ``position``?"""
    g, c, t = key
    pg, pc, pt = position
    return (g, c) > (pg, pc) or ((g, c) == (pg, pc) and t >= pt)
