"""Many chains of one StaticConfig: a generator of finished chunks, and ``run_sweep`` collecting it.

Chain ``i`` uses the key ``fold_in(root, chain_ids[i])`` and its own hyperparameters, so a chain's
numbers do not depend on which batch, chunk, device or host it ran on: a chunked, sharded or
resumed sweep is bit-identical to a single batch (tested).

- **chain chunks**: ``plan.chunk_size`` chains per compiled batch (``plan.plan_sweep``). The last
  chunk is padded with copies of its last chain; padded chains are dropped from the results.
- **generation chunks**: generation 0 (``programs.init_program``), then ``advance`` calls of at
  most ``plan.generation_chunk`` generations. Time-sized plans run one generation first, then
  about ``plan.CHUNK_SECONDS`` of measured work per call (``_ChunkSizer``); the first chain chunk
  also stops after every snapshot generation, where its first chain's model is sampled.
- **pipelining**: the next call is dispatched before a finished chunk is handed to the caller, so
  the host's work on a chunk (results parts, checkpoints, progress) overlaps the device's work on
  the next. The batched ``ChainState`` and the chains' real data stay on the device between
  calls; the real data is drawn again on resume, not stored.
- **multi-host**: every process runs the same loop on the global mesh and receives only the
  rows of its own devices (``ChunkOutput.positions``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from collapse_jax.chain import ChainState
from collapse_jax.config import ConfigError, StaticConfig
from collapse_jax.mesh import (
    AXIS,
    first_process_value,
    local_rows,
    make_mesh,
    put_replicated,
    put_sharded,
)
from collapse_jax.plan import SweepPlan, hparam_defaults, plan_sweep, precision
from collapse_jax.programs import Programs, compile_sweep
from collapse_jax.types import PRNGKey, PyTree

#: Largest share of a time-sized chunk the host work at its boundary may take: when handling a
#: finished chunk (results part, checkpoint) takes ``h`` seconds, chunks aim at
#: ``max(plan.chunk_seconds, h / HOST_SHARE)`` seconds of device work.
HOST_SHARE = 0.05


def snapshot_generations(generations: int, count: int = 5) -> tuple[int, ...]:
    """About ``count`` generations spread over ``0 .. generations - 1``, first and last included:
    where the first chain's model is sampled for pictures.

    >>> snapshot_generations(10)
    (0, 2, 4, 7, 9)
    """
    return tuple(sorted(set(np.linspace(0, generations - 1, count).round().astype(int).tolist())))


class ChunkOutput(NamedTuple):
    """A finished generation chunk of a chain chunk, as ``sweep_chunks`` yields it.

    Attributes:
        chain_chunk: index of the chain chunk.
        gen_start: first generation in ``metrics``.
        gen_stop: one past the last generation (the next generation to run).
        positions: ``[k]`` index into ``chain_ids`` of this process's real chains in the chunk.
        metrics: name -> ``[k, gen_stop - gen_start]`` numpy arrays.
        overflow: ``[k]`` bool: a pool write was dropped (capacity too small).
        state: the batched, sharded ``ChainState`` after ``gen_stop - 1`` (a global array).
        plan: the sweep's plan.
        samples: ``{generation: samples}`` of the first chain (chain chunk 0, when snapshots are
            kept and ``gen_stop - 1`` is a snapshot generation), else ``{}``.
    """

    chain_chunk: int
    gen_start: int
    gen_stop: int
    positions: np.ndarray
    metrics: dict[str, np.ndarray]
    overflow: np.ndarray
    state: ChainState
    plan: SweepPlan
    samples: dict[int, Any]


class SweepStart(NamedTuple):
    """Where a resumed sweep starts: chain chunk ``chain_chunk`` at ``generation`` with ``state``
    (the batched state after ``generation - 1``; None when ``generation`` is 0)."""

    chain_chunk: int
    generation: int
    state: ChainState | None


class SweepSetup(NamedTuple):
    """A sweep ready to run: its compiled programs and the arrays they are called with."""

    static: StaticConfig
    plan: SweepPlan
    mesh: Mesh
    programs: Programs
    root_data: jax.Array
    args: PyTree
    ids: np.ndarray
    hparams: dict[str, np.ndarray]
    snapshot: int
    compile_seconds: float


def prepare_sweep(static: StaticConfig, root: PRNGKey, chain_ids: Any, hparams: Mapping,
                  args: PyTree, *, plan: SweepPlan, mesh: Mesh, snapshot: int = 0,
                  compile: str = "optimized") -> SweepSetup:
    """Pad the chains to whole batches, put the shared data on the mesh and compile (timed;
    ``compile``: ``Experiment.compile``)."""
    ids = np.asarray(chain_ids, dtype=np.int32).reshape(-1)
    num = ids.shape[0]
    if num == 0:
        raise ConfigError("chain_ids: empty; give at least one chain")
    n_dev = mesh.devices.size
    if plan.chunk_size % n_dev or plan.num_chains != num:
        raise ConfigError(f"chunk_size={plan.chunk_size}: must be a multiple of the {n_dev} "
                          f"devices (plan for {plan.num_chains} chains, sweep of {num})")
    hparams = complete_hparams(static, hparams)
    pad = plan.n_chunks * plan.chunk_size - num
    hp = {k: np.broadcast_to(np.asarray(v, static.dtype), (num,)) for k, v in hparams.items()}
    hp = {k: np.concatenate([v, np.repeat(v[-1:], pad)]) for k, v in hp.items()}
    root_data = put_replicated(np.asarray(jax.random.key_data(root)), mesh)
    args_g = put_replicated(args, mesh)
    t0 = time.perf_counter()
    programs = compile_sweep(static, hp, args_g, root_data, str(jax.random.key_impl(root)),
                             plan, mesh, snapshot, compile)
    return SweepSetup(static, plan, mesh, programs, root_data, args_g,
                      np.concatenate([ids, np.repeat(ids[-1:], pad)]), hp, snapshot,
                      time.perf_counter() - t0)


def complete_hparams(static: StaticConfig, hparams: Mapping) -> dict[str, Any]:
    """``hparams`` with every hyperparameter the chain reads that it does not name set to its
    default (``collapse-jax families`` lists them), as ``Experiment`` does. A name the chain
    does not read (a misspelling) is a ``ConfigError`` naming it and the allowed names, before
    anything is traced.

    >>> from collapse_jax import StaticConfig
    >>> static = StaticConfig("gaussian", "replace", n0=8, n=8, d=2, generations=3)
    >>> complete_hparams(static, {"sigma": 2.0})
    {'sigma': 2.0, 'scale': 1.0}
    >>> complete_hparams(static, {"sgima": 2.0})
    Traceback (most recent call last):
    ...
    collapse_jax.config.ConfigError: hparams: unknown sgima for model 'gaussian' under regime \
'replace'; the chain reads scale, sigma (defaults: collapse-jax families)
    """
    defaults = hparam_defaults(static)
    unknown = [str(k) for k in hparams if k not in defaults]
    if unknown:
        raise ConfigError(f"hparams: unknown {', '.join(unknown)} for model {static.model!r} "
                          f"under regime {static.regime!r}; the chain reads "
                          f"{', '.join(sorted(defaults))} (defaults: collapse-jax families)")
    return {**defaults, **hparams}


class _Call(NamedTuple):
    """One dispatched program call: generations ``start .. stop - 1`` of chain chunk
    ``chain_chunk`` (``real`` real chains)."""

    chain_chunk: int
    start: int
    stop: int
    real: int
    state: ChainState
    metrics: Any
    samples: dict[int, Any]


class _ChunkSizer:
    """How many generations the next ``advance`` call runs.

    Fixed plans (``chunk_seconds == 0``) always run ``generation_chunk``. Time-sized plans run one
    generation first, then ``target / (seconds per generation of the device)`` within
    ``[1, generation_chunk]``, where ``target = max(chunk_seconds, host / HOST_SHARE)`` and
    ``host`` is the last boundary's host work (results part, checkpoint, progress).

    The device's rate is measured from dispatch to ready. The host handles the previous chunk
    while the device runs, so when the device was already idle once the host work ended
    (``exact=False``) the wait only bounds its time from above: the next call then runs at least
    twice as many generations, instead of shrinking chunks to the host's pace. On a multi-host
    run process 0's choice is used everywhere (every process must call the same programs).
    """

    def __init__(self, plan: SweepPlan):
        self.plan = plan
        self.per_generation: float | None = None
        self.host = 0.0
        self.at_least = 1

    def record(self, generations: int, seconds: float, init: bool, *, host: float = 0.0,
               exact: bool = True) -> None:
        self.host = host
        if init:
            return
        self.per_generation = seconds / max(generations, 1)
        self.at_least = 1 if exact else 2 * generations

    def length(self) -> int:
        plan = self.plan
        if plan.chunk_seconds <= 0:
            return plan.generation_chunk
        if self.per_generation is None:
            n = 1
        else:
            target = max(plan.chunk_seconds, self.host / HOST_SHARE)
            n = max(int(target / max(self.per_generation, 1e-9)), self.at_least)
        return first_process_value(max(1, min(n, plan.generation_chunk)))


def sweep_chunks(setup: SweepSetup, start: SweepStart | None = None) -> Iterator[ChunkOutput]:
    """Run the prepared sweep and yield every finished generation chunk, in order.

    While the caller handles a yielded chunk the device already runs the next call.
    """
    plan, mesh, programs = setup.plan, setup.mesh, setup.programs
    chunk, G = plan.chunk_size, plan.generations
    sh = NamedSharding(mesh, P(AXIS))
    snaps = snapshot_generations(G) if setup.snapshot > 0 else ()
    sizer = _ChunkSizer(plan)
    first = 0 if start is None else start.chain_chunk
    pending: _Call | None = None
    for c in range(first, plan.n_chunks):
        sl = slice(c * chunk, (c + 1) * chunk)
        ids = put_sharded(setup.ids[sl], sh)
        hp = {k: put_sharded(v[sl], sh) for k, v in setup.hparams.items()}
        call_args = (setup.root_data, ids, hp)
        g = start.generation if (start is not None and c == first) else 0
        state = start.state if g > 0 else None
        if g > 0:
            _, real, _ = programs.init(*call_args, setup.args)  # the chunk's real data
        while g < G:
            tick = time.perf_counter()
            if g == 0:
                stop = 1
                state, real, m = programs.init(*call_args, setup.args)
                m = jax.tree.map(lambda x: x[:, None], m)
            else:
                stop = min(g + sizer.length(), G)
                if c == 0:  # stop after each snapshot generation
                    stop = min([stop, *(s + 1 for s in snaps if s >= g)])
                g_0, g_1 = put_replicated((np.int32(g), np.int32(stop)), mesh)
                state, m = programs.advance(state, real, g_0, g_1, *call_args, setup.args)
            samples = {}
            if c == 0 and stop - 1 in snaps:
                g_s = put_replicated(np.int32(stop - 1), mesh)
                samples[stop - 1] = programs.snapshot(state, real, g_s, *call_args)
            host, busy = 0.0, True
            if pending is not None:  # the caller handles the previous chunk while this runs
                h0 = time.perf_counter()
                yield _finish(pending, plan)
                host = time.perf_counter() - h0
                busy = not all(x.is_ready() for x in jax.tree.leaves(m))
            jax.block_until_ready(m)
            sizer.record(stop - g, time.perf_counter() - tick, init=g == 0, host=host,
                         exact=busy)
            pending = _Call(c, g, stop, min(chunk, plan.num_chains - c * chunk), state, m,
                            samples)
            g = stop
    if pending is not None:
        yield _finish(pending, plan)


def _finish(call: _Call, plan: SweepPlan) -> ChunkOutput:
    """The host side of a finished call: this process's rows, fetched."""
    rows, (metrics, overflow) = local_rows((call.metrics, call.state.pool.overflow), call.real)
    metrics = {k: v[:, : call.stop - call.start] for k, v in metrics.items()}
    samples = jax.device_get(call.samples)
    return ChunkOutput(call.chain_chunk, call.start, call.stop,
                       call.chain_chunk * plan.chunk_size + rows, metrics, overflow, call.state,
                       plan, samples)


class SweepResult(NamedTuple):
    """Host-side outputs of ``run_sweep``.

    Attributes:
        metrics: metric name -> ``[chains, generations]`` numpy array (on a multi-host run only
            this process's chains, see ``positions``).
        overflow: ``[chains]`` bool, a pool write was dropped (capacity too small).
        compile_seconds: time spent compiling (0 when the programs were cached).
        run_seconds: time spent running the compiled programs.
        chunk_size: chains per compiled batch (all devices together).
        positions: ``[chains]`` int, index into ``chain_ids`` of each returned row.
        generation_chunk: static loop length of the compiled ``advance`` program.
        samples: ``{generation: samples}`` of the first chain (empty without snapshots).

    >>> import jax, numpy as np
    >>> from collapse_jax import StaticConfig, run_sweep
    >>> static = StaticConfig(model="gaussian", regime="replace", n0=8, n=8, d=2, generations=4,
    ...                       n_test=8)
    >>> r = run_sweep(static, jax.random.key(0), np.arange(3), {"sigma": 1.0, "scale": 1.0}, {},
    ...               generation_chunk=2)
    >>> r.metrics["trace_ratio"].dtype, r.overflow.tolist(), r.chunk_size, r.generation_chunk
    (dtype('float32'), [False, False, False], 3, 2)
    >>> [round(float(x), 3) for x in r.metrics["trace_ratio"][0]]  # chain 0, generations 0 .. 3
    [0.413, 0.375, 0.133, 0.113]
    """

    metrics: dict[str, np.ndarray]
    overflow: np.ndarray
    compile_seconds: float
    run_seconds: float
    chunk_size: int
    positions: np.ndarray | None = None
    generation_chunk: int = 0
    samples: dict[int, Any] | None = None


def run_sweep(
    static: StaticConfig,
    root: PRNGKey,
    chain_ids: Any,
    hparams: Mapping[str, Any],
    args: PyTree,
    *,
    chunk_size: int | None = None,
    generation_chunk: int | None = None,
    mesh: Mesh | None = None,
    plan: SweepPlan | None = None,
    snapshot: int = 0,
    compile: str = "optimized",
) -> SweepResult:
    """Run ``len(chain_ids)`` chains of one StaticConfig: sharded, in chain and generation chunks.

    Args:
        static: shapes of the chain.
        root: root key; chain i uses ``fold_in(root, chain_ids[i])``.
        chain_ids: ``[C]`` integers (the seed of each chain).
        hparams: name -> ``[C]`` values, one per chain, or scalars (broadcast); any mapping
            (cast to ``static.dtype``). A hyperparameter not named takes its default
            (``collapse-jax families``); a name the chain does not read is a ``ConfigError``.
        args: the source's host data (``Source.load``), shared by every chain.
        chunk_size: chains per batch over all devices; None chooses from the memory estimate
            (``plan.plan_sweep``).
        generation_chunk: generations per compiled ``advance`` call; None sizes the calls by
            time. Results do not depend on it.
        mesh: 1-d device mesh with axis ``'chains'`` (default ``make_mesh()``: every device).
        plan: a stored plan; overrides ``chunk_size`` and ``generation_chunk``.
        snapshot: samples kept of the first chain at ``snapshot_generations`` (0: none).
        compile: ``"optimized"`` or ``"fast"`` (``Experiment.compile``).

    Returns:
        A SweepResult with ``[C, generations]`` metrics of this process's chains.

    >>> import jax, numpy as np
    >>> from collapse_jax import StaticConfig, run_sweep
    >>> static = StaticConfig(model="gaussian", regime="replace", n0=8, n=8, d=2, generations=4,
    ...                       n_test=8)
    >>> r = run_sweep(static, jax.random.key(0), np.arange(3), {"sigma": 1.0, "scale": 1.0}, {},
    ...               generation_chunk=2)
    >>> r.metrics["trace_ratio"].shape, r.positions.tolist()
    ((3, 4), [0, 1, 2])
    """
    mesh = make_mesh() if mesh is None else mesh
    num = int(np.asarray(chain_ids).size)
    with precision(static):
        if plan is None:
            plan = plan_sweep(static, args, max(num, 1), chunk_size=chunk_size,
                              generation_chunk=generation_chunk, devices=mesh.devices.size)
        setup = prepare_sweep(static, root, chain_ids, dict(hparams), args, plan=plan,
                              mesh=mesh, snapshot=snapshot, compile=compile)
        t0 = time.perf_counter()
        rows: dict[int, list] = {}
        samples: dict[int, Any] = {}
        for out in sweep_chunks(setup):
            rows.setdefault(out.chain_chunk, []).append(out)
            samples.update(out.samples)
        run_seconds = time.perf_counter() - t0
    whole = [parts for parts in rows.values() if parts[-1].gen_stop == static.generations]
    if not whole:
        return SweepResult({}, np.zeros((0,), bool), setup.compile_seconds, run_seconds,
                           plan.chunk_size, np.zeros((0,), np.int64), plan.generation_chunk,
                           samples)
    metrics = {k: np.concatenate([np.concatenate([p.metrics[k] for p in parts], axis=1)
                                  for parts in whole]) for k in whole[0][0].metrics}
    return SweepResult(metrics, np.concatenate([parts[-1].overflow for parts in whole]),
                       setup.compile_seconds, run_seconds, plan.chunk_size,
                       np.concatenate([parts[-1].positions for parts in whole]),
                       plan.generation_chunk, samples)
