"""From an ``Experiment`` to ``Results``: a plain loop over each group's finished chunks.

``run_experiment(exp)`` resolves the experiment once (``validate.resolve``), plans every group
(``plan.plan_run``), then for each StaticConfig (regime x swept sizes) runs its
``seeds x hyperparameter grid`` chains (``sweep.sweep_chunks``): every finished chunk is checked,
stored (with an output directory: ``store.RunStore``), added to the results and reported to the
progress display. Chains with the same seed share their key (common random numbers), so regimes
and hyperparameter values are compared on the same real data.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import numpy as np

from collapse_jax import tables
from collapse_jax.config import ConfigError, Experiment
from collapse_jax.mesh import make_mesh
from collapse_jax.plan import SweepPlan, hparam_defaults, plan_group, precision
from collapse_jax.programs import abstract_state
from collapse_jax.progress import Progress
from collapse_jax.results import (
    Results,
    build_table,
    check_complete,
    columns,
    labels,
    metric_names,
)
from collapse_jax.store import RunStore
from collapse_jax.sweep import ChunkOutput, SweepStart, prepare_sweep, sweep_chunks
from collapse_jax.validate import RunSpec, resolve


def run_experiment(
    exp: Experiment | RunSpec,
    *,
    progress: bool | Callable[[str | None, float, int], None] | Progress = False,
    out_dir: Any = None,
    resume: bool = False,
    mesh: Any = None,
) -> Results:
    """Run every chain an experiment describes and return the tidy table.

    Chains are sharded over every device (``mesh.make_mesh``) and run in chain chunks
    (``exp.chunk_size``, chosen from a memory estimate when None) and generation chunks
    (``exp.generation_chunk``). With ``out_dir`` the table is written there in parts as it is
    computed and the chain state is checkpointed (``store.py``), so a killed run loses nothing:
    ``resume=True`` continues from the latest checkpoint and gives a table bit-identical to an
    uninterrupted run.

    Args:
        exp: the experiment (resolved here first: bad input raises ``ConfigError`` before any
            compile), or an already resolved ``RunSpec``.
        progress: True for a progress display on stderr (``progress.Progress``: a compile
            phase per group, then chain-generations with a rate and ETA from the device time;
            with ``out_dir`` also logged to ``out_dir/run.log``), a callable
            ``(label, done, total)`` (chain-generations; ``label`` None at the end), or a
            ``Progress``. It is told of every finished chunk after the chunk is stored; a
            ``KeyboardInterrupt`` raised there stops the run with the state checkpointed first
            (the CLI's Ctrl-C does this), so ``resume`` loses nothing.
        out_dir: directory for results parts, samples and checkpoints; required on a
            multi-host run. None keeps everything in memory.
        resume: continue from the latest checkpoint in ``out_dir`` (False starts over, clearing
            its parts and checkpoints).
        mesh: device mesh with axis ``'chains'`` (default: every device of every host).

    Returns:
        Results with one row per chain x generation (on a multi-host run, process 0 gets every
        row; other processes get their own).

    >>> from collapse_jax import Experiment, run_experiment
    >>> r = run_experiment(Experiment(name="doc", model="gaussian", regimes=("replace",),
    ...                               seeds=2, generations=3, n=8, d=2, n_test=8))
    >>> r.table.shape[0], list(r.table.columns[:5])
    (6, ['experiment', 'model', 'regime', 'seed', 'generation'])
    """
    spec = exp if isinstance(exp, RunSpec) else resolve(exp)
    exp = spec.experiment
    if resume and out_dir is None:
        raise ConfigError("resume=True: needs out_dir (the directory holding the checkpoints)")
    if out_dir is None and jax.process_count() > 1:
        raise ConfigError(f"out_dir=None: a multi-host run ({jax.process_count()} processes) "
                          f"needs an output directory (each process writes its own results)")
    mesh = make_mesh() if mesh is None else mesh
    root = jax.random.key(exp.root_seed)
    report = _progress(progress, spec, out_dir)
    per_group = spec.chains * exp.generations
    store = restored = None
    if out_dir is not None:
        store = RunStore(out_dir, spec.fingerprint, keep=exp.keep_checkpoints, resume=resume,
                         every_seconds=float(exp.checkpoint_seconds))
        if resume:
            restored = store.restore(lambda record: _restore_target(spec, record, mesh))
    kept: list[dict[str, np.ndarray]] = []
    samples: dict[int, dict[int, Any]] = {}
    groups: list[dict[str, Any]] = []
    stack = contextlib.ExitStack()
    try:
        # a fresh run plans each group when it prepares it (the memory estimate traces the
        # chain), so the groups after the first are planned in the background too
        devices = mesh.devices.size
        points = [(None, None)] * len(spec.statics) if restored is None else [
            _resume_point(restored, i, plan_group(spec, i, devices), s.generations)
            for i, s in enumerate(spec.statics)]
        todo = [i for i, (plan, start) in enumerate(points)
                if start is None or start.chain_chunk < plan.n_chunks]

        def prepare(i: int):
            plan = points[i][0] or plan_group(spec, i, devices)
            # the group's chain gets the hyperparameters it reads: a regime's own (``lam`` of
            # fixed_real_mix) is swept for every regime of the run, but only that regime reads it
            reads = hparam_defaults(spec.statics[i])
            hparams = {k: v for k, v in spec.hparams.items() if k in reads}
            with precision(spec.statics[i]):
                return prepare_sweep(spec.statics[i], root, spec.chain_ids, hparams,
                                     spec.args[i], plan=plan, mesh=mesh,
                                     snapshot=spec.snapshot, compile=spec.experiment.compile)

        setups = stack.enter_context(Prefetch(prepare, todo, ahead=PREFETCH))
        for i, static in enumerate(spec.statics):
            start = points[i][1]
            if i not in todo:
                report.skip((i + 1) * per_group)
                continue  # the group finished before the interruption
            report.compiling(i, len(spec.statics), spec.labels[i])
            setup = setups.get(i)  # compiled while the group before ran; the next one starts
            plan = setup.plan
            done = i * per_group + _done_before(start, plan, spec.chains, static.generations)
            report.skip(done)
            report.compiled(setup.compile_seconds)
            with precision(static):
                t0 = time.perf_counter()
                for out in sweep_chunks(setup, start):
                    _check_overflow(out, spec.labels[i], static)
                    cols = columns(spec, i, out.metrics, out.positions, out.gen_start)
                    if store is not None:
                        store.chunk_done(i, cols, out.chain_chunk, out.gen_start, out.gen_stop,
                                         static.generations, out.state, plan._asdict(),
                                         out.samples, labels=labels(spec, i))
                    else:
                        kept.append(cols)
                    samples.setdefault(i, {}).update(out.samples)
                    done += len(out.positions) * (out.gen_stop - out.gen_start)
                    try:
                        report.chunk(f"{spec.labels[i]} gen {out.gen_stop}/{static.generations}",
                                     done)
                    except KeyboardInterrupt:  # a stop asked for at this boundary: keep it all
                        if store is not None:
                            store.flush(out.state if out.gen_stop < static.generations
                                        else None)
                        raise
                run_seconds = time.perf_counter() - t0
            groups.append({"regime": static.regime, "n": static.n, "n0": static.n0,
                           "d": static.d, "chains": spec.chains, "chunk_size": plan.chunk_size,
                           "generation_chunk": plan.generation_chunk,
                           "compile_seconds": setup.compile_seconds,
                           "run_seconds": run_seconds})
        report.close()
        t_table = time.perf_counter()
        if store is not None:
            cols = store.finish()
            samples = store.load_samples()
        else:
            cols = tables.sort_columns({k: np.concatenate([c[k] for c in kept])
                                        for k in kept[0]})
    finally:
        stack.close()
        if store is not None:
            store.close()
    if jax.process_index() == 0:
        check_complete(spec, cols)
    table = build_table(spec, cols)
    return Results(table, spec, groups, metric_names(spec, table), samples,
                   table_seconds=time.perf_counter() - t_table)


#: Compile the next group of a run while the current one runs (one group ahead; 0: none).
PREFETCH = 1


class Prefetch:
    """``get(i)`` returns ``prepare(i)`` for the groups ``order``, in that order, computing the
    next ``ahead`` groups on a background thread meanwhile: tracing, lowering and compiling
    (single-threaded in XLA) overlap the running chains of the group before. ``prepare`` is a
    pure function of ``i`` (the compiled programs do not depend on when they are built), so the
    results are those of compiling in turn. A context manager: on exit, groups not started are
    cancelled (one already compiling finishes in the background)."""

    def __init__(self, prepare: Callable[[int], Any], order: list[int], ahead: int = 1):
        self._prepare, self._order, self._ahead = prepare, list(order), ahead
        self._pool = ThreadPoolExecutor(1, "collapse-jax-compile") if ahead > 0 else None
        self._futures: dict[int, Future] = {}

    def get(self, i: int) -> Any:
        future = self._futures.pop(i, None)
        # a group not started ahead (the first) is prepared before the next is started: tracing
        # holds the GIL, so the two would share it and the first group's chains start later
        ready = self._prepare(i) if future is None else None
        pos = self._order.index(i)
        if self._pool is not None:
            for j in self._order[pos + 1:pos + 1 + self._ahead]:
                if j not in self._futures:
                    self._futures[j] = self._pool.submit(self._prepare, j)
        return ready if future is None else future.result()

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _restore_target(spec: RunSpec, record: dict[str, Any], mesh: Any) -> Any:
    """The abstract batched state a checkpoint record restores into (None: no state needed)."""
    static = spec.statics[record["group"]]
    if record["generation"] >= static.generations:
        return None
    with precision(static):
        state, _ = abstract_state(static, spec.args[record["group"]],
                                  record["plan"]["chunk_size"], mesh)
    return state


def _resume_point(restored, group: int, plan: SweepPlan, generations: int
                  ) -> tuple[SweepPlan, SweepStart | None]:
    """The plan and start of ``group`` given a restored checkpoint ``(record, state)``: groups
    before the checkpoint's are done, its own continues where it stopped, later ones start."""
    if restored is None:
        return plan, None
    record, state = restored
    if group < record["group"]:
        return plan, SweepStart(plan.n_chunks, 0, None)
    if group > record["group"]:
        return plan, None
    plan = SweepPlan(**record["plan"])
    if record["generation"] >= generations:
        return plan, SweepStart(record["chain_chunk"] + 1, 0, None)
    return plan, SweepStart(record["chain_chunk"], record["generation"], state)


def _progress(progress, spec: RunSpec, out_dir: Any) -> Progress:
    """The run's ``Progress`` from ``run_experiment``'s argument (process 0 reports)."""
    if isinstance(progress, Progress):
        return progress
    total = len(spec.statics) * spec.chains * spec.experiment.generations
    lead = jax.process_index() == 0
    return Progress(total, show=lead and progress is True,
                    log=Path(out_dir) / "run.log" if (out_dir is not None and lead) else None,
                    callback=progress if (callable(progress) and lead) else None)


def _done_before(start: SweepStart | None, plan: SweepPlan, chains: int, generations: int
                 ) -> int:
    """Chain-generations of a group finished before a resume point."""
    if start is None:
        return 0
    done = min(start.chain_chunk * plan.chunk_size, chains)
    in_chunk = max(min(plan.chunk_size, chains - done), 0)
    return done * generations + in_chunk * start.generation


def _check_overflow(out: ChunkOutput, label: str, static) -> None:
    if out.overflow.any():
        raise RuntimeError(
            f"pool overflow in {int(out.overflow.sum())} chains of {label}: the regime's "
            f"capacity is too small for n0={static.n0}, n={static.n}, "
            f"generations={static.generations}")


__all__ = ["ConfigError", "Results", "run_experiment"]
