"""Many chains: ``vmap`` over chain ids and hyperparameters, sharded over devices, in chunks.

Chain ``i`` uses the key ``fold_in(root, chain_ids[i])`` and its own hyperparameters, so a chain's
numbers do not depend on which batch, chunk, device or host it ran on: a chunked, sharded or
resumed sweep is bit-identical to a single batch (tested).

The host loop, for one StaticConfig:

- **chain chunks**: ``chunk_size`` chains per compiled batch (chosen from a memory estimate, a
  multiple of the device count). The last chunk is padded with copies of its last chain; padded
  chains are dropped from the results.
- **sharding**: the chain axis of every batch is sharded over a 1-d ``jax.sharding.Mesh`` with
  axis ``'chains'`` (``NamedSharding(mesh, P('chains'))``); the source's host data and the root
  key are replicated. One config runs on 1 or N devices, or N hosts, unchanged. No ``pmap``.
- **generation chunks**: ``chain.init`` (generation 0) then generations ``start .. stop - 1`` of
  ``chain.step`` per call, in a ``fori_loop`` between the traced (unbatched) bounds writing a
  metrics buffer of static length ``generation_chunk``, so one compiled program serves chunks of
  any length. By default chunks are sized by time: the first runs one generation, later ones
  about ``CHUNK_SECONDS`` of measured work each, so the fixed cost of a chunk boundary (fetching
  metrics, a results part, a checkpoint, a progress update) stays a few percent of the run; an
  explicit ``generation_chunk`` gives fixed chunks. Calls are pipelined: the next chunk is
  dispatched before the host handles the previous one's outputs. The batched ``ChainState`` and
  the chains' real data (drawn once, by the generation-0 program) stay on device between chunks;
  at each boundary ``on_chunk`` sees the metrics and the state (checkpoints; the real data is
  drawn again on resume, not stored).
- **multi-host**: after ``initialize_distributed``, every process runs the same loop on the global
  mesh and fetches only the rows of its own devices (``SweepResult.positions``).

References:
    JAX documentation, "Distributed arrays and automatic parallelization" and "Using JAX in
    multi-host and multi-process environments".
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from collapse_jax import chain as C
from collapse_jax.chain import ChainState, make_chain, run_chain
from collapse_jax.config import ConfigError, StaticConfig
from collapse_jax.types import Array, Hparams, Metrics, PRNGKey, PyTree, RealData

#: Name of the mesh axis the chain axis is sharded over.
AXIS = "chains"


class SweepResult(NamedTuple):
    """Host-side outputs of a sweep.

    Attributes:
        metrics: metric name -> ``[chains, generations]`` numpy array (on a multi-host run only
            this process's chains, see ``positions``).
        overflow: ``[chains]`` bool, a pool write was dropped (capacity too small).
        compile_seconds: time spent compiling (0 when the programs were cached).
        run_seconds: time spent running the compiled programs.
        chunk_size: chains per compiled batch (all devices together).
        positions: ``[chains]`` int, index into ``chain_ids`` of each returned row (``0..C-1`` on a
            single host).
        generation_chunk: static scan length of the compiled ``advance`` program (the most
            generations one call runs).
    """

    metrics: dict[str, np.ndarray]
    overflow: np.ndarray
    compile_seconds: float
    run_seconds: float
    chunk_size: int
    positions: np.ndarray | None = None
    generation_chunk: int = 0


class SweepPlan(NamedTuple):
    """How a sweep of one StaticConfig is split (fixed before launch, stored in checkpoints).

    Attributes:
        num_chains: real chains.
        chunk_size: chains per compiled batch, all devices together (a multiple of ``devices``).
        generation_chunk: static scan length of the ``advance`` program: the most generations
            one call runs (>= 1).
        devices: size of the mesh.
        generations: generations per chain.
        chunk_seconds: > 0: size each call to about this many seconds of measured work (at most
            ``generation_chunk`` generations); 0: every call runs ``generation_chunk``.
    """

    num_chains: int
    chunk_size: int
    generation_chunk: int
    devices: int
    generations: int
    chunk_seconds: float = 0.0

    @property
    def n_chunks(self) -> int:
        return -(-self.num_chains // self.chunk_size)


class ChunkOutput(NamedTuple):
    """What ``run_sweep`` hands ``on_chunk`` at every generation-chunk boundary.

    Attributes:
        chain_chunk: index of the chain chunk.
        gen_start: first generation in ``metrics``.
        gen_stop: one past the last generation (the next generation to run).
        positions: ``[k]`` index into ``chain_ids`` of this process's real chains in the chunk.
        metrics: name -> ``[k, gen_stop - gen_start]`` float32 numpy arrays.
        overflow: ``[k]`` bool.
        state: the batched, sharded ``ChainState`` after ``gen_stop - 1`` (a global array).
        plan: the sweep's plan.
    """

    chain_chunk: int
    gen_start: int
    gen_stop: int
    positions: np.ndarray
    metrics: dict[str, np.ndarray]
    overflow: np.ndarray
    state: ChainState
    plan: SweepPlan


class SweepStart(NamedTuple):
    """Where a resumed sweep starts: chain chunk ``chain_chunk`` at ``generation`` with ``state``
    (the batched state after ``generation - 1``; None when ``generation`` is 0)."""

    chain_chunk: int
    generation: int
    state: ChainState | None


# ----------------------------------------------------------------------------------------------
# Devices and hosts


def make_mesh(devices: Any = None) -> Mesh:
    """A 1-d mesh with axis ``'chains'`` over ``devices`` (default: every device of every host)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (AXIS,))


#: Environment variables read by ``initialize_distributed`` (the standard JAX ones work too).
ENV_COORDINATOR = "COLLAPSE_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "COLLAPSE_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "COLLAPSE_JAX_PROCESS_ID"


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
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
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


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: must be an integer") from None


def _put_sharded(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array every process holds in full (multi-host safe)."""
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def _put_replicated(tree: PyTree, mesh: Mesh) -> PyTree:
    rep = NamedSharding(mesh, P())
    return jax.tree.map(lambda x: _put_sharded(np.asarray(x), rep), tree)


def _local_rows(tree: PyTree, num: int) -> tuple[np.ndarray, PyTree]:
    """This process's rows (leading axis) of chain-sharded global arrays, real rows only.

    Returns the row indices (into the chunk) and the tree of host arrays of those rows.
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


# ----------------------------------------------------------------------------------------------
# Memory planning


def state_shapes(static: StaticConfig, args: PyTree) -> tuple[ChainState, Metrics]:
    """Shapes and dtypes of one chain's final state and metrics, without running it."""
    chain = make_chain(static)
    hp = _hparam_shapes(static)
    return jax.eval_shape(
        lambda k, h, a: run_chain(chain, k, h, a), jax.random.key(0), hp, args
    )


def _hparam_shapes(static: StaticConfig) -> dict[str, jax.ShapeDtypeStruct]:
    from collapse_jax.model import get_model_spec
    from collapse_jax.pool import regime_hparams

    names = {**get_model_spec(static.model).hparams, **regime_hparams((static.regime,))}
    return {k: jax.ShapeDtypeStruct((), jnp.dtype(static.dtype)) for k in names}


def _generation_shapes(static: StaticConfig, args: PyTree) -> tuple[Any, Any, Any]:
    """``jax.eval_shape`` of one chain's generation 0: ``(state, metrics, real data)``."""
    chain = make_chain(static)

    def one(k, h, a):
        real = C.draw_real(chain, k, h, a)
        state, metrics = C.init(chain, k, h, real)
        return state, metrics, real

    return jax.eval_shape(one, jax.random.key(0), _hparam_shapes(static), args)


def _nbytes(aval: Any) -> int:
    """Bytes of an abstract array (0 for a PRNG key or anything without a plain dtype)."""
    try:
        return math.prod(aval.shape) * np.dtype(aval.dtype).itemsize
    except (AttributeError, TypeError):
        return 0


def _largest_array(jaxpr: Any) -> int:
    """Bytes of the largest array any equation of ``jaxpr`` (or of its sub-jaxprs: loop bodies,
    ``custom_vmap`` rules, ...) produces."""
    best = 0
    for eqn in jaxpr.eqns:
        best = max([best, *(_nbytes(v.aval) for v in eqn.outvars)])
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds its Jaxpr
                if hasattr(inner, "eqns"):
                    best = max(best, _largest_array(inner))
    return best


def _abstract_signature(tree: PyTree, *, sharding: bool) -> tuple:
    """Hashable structure, shapes and dtypes (and shardings) of ``tree``: a cache key of what a
    trace or a compile depends on (values do not enter)."""
    return (jax.tree.structure(tree), tuple(
        (np.shape(x), str(getattr(x, "dtype", type(x).__name__)))
        + ((str(getattr(x, "sharding", "")),) if sharding else ())
        for x in jax.tree.leaves(tree)))


_LARGEST: dict[Any, int] = {}


def _largest_temporary(static: StaticConfig, args: PyTree, shapes: Any) -> int:
    """Bytes of the largest intermediate array of one chain's generation 0 or later generation
    (traced with ``jax.make_jaxpr``, nothing compiled; cached by config and argument shapes),
    e.g. the KDE's ``[n_test, capacity]`` kernel matrix."""
    sig = (static, _abstract_signature(args, sharding=False))
    if sig not in _LARGEST:
        _LARGEST[sig] = _trace_largest(static, args, shapes)
    return _LARGEST[sig]


def _trace_largest(static: StaticConfig, args: PyTree, shapes: Any) -> int:
    chain = make_chain(static)
    state, _, real = shapes
    hp, key = _hparam_shapes(static), jax.random.key(0)

    def first(k, h, a):
        return C.init(chain, k, h, C.draw_real(chain, k, h, a))

    def later(s, k, h, r, a):
        return C.step(chain, s, jnp.int32(1), k, h, r, a)

    return max(_largest_array(jax.make_jaxpr(first)(key, hp, args).jaxpr),
               _largest_array(jax.make_jaxpr(later)(state, key, hp, real, args).jaxpr))


def bytes_per_chain(static: StaticConfig, args: PyTree, factor: float = 4.0, *,
                    shapes: Any = None) -> int:
    """Estimated device bytes one chain needs inside a vmapped batch.

    ``factor`` times what the chain keeps (its state: pool and parameters; its real data: train,
    test, truth; one generation's metrics; from ``jax.eval_shape``), for a generation's
    temporaries of the same size (sample block, pool update, fit), plus the largest intermediate
    array of a generation (``_largest_temporary``), which can dwarf the state (the KDE's
    test-by-pool kernel matrix: 40 KB per chain at n = n_test = 100, against 4 KB of state).
    ``run_sweep`` checks the estimate against the compiled program's ``memory_analysis()`` where
    the backend reports temporaries (GPU, TPU). ``shapes``: a precomputed
    ``_generation_shapes(static, args)``.
    """
    shapes = _generation_shapes(static, args) if shapes is None else shapes
    nbytes = sum(_nbytes(x) for x in jax.tree.leaves(shapes))
    return int(factor * nbytes) + _largest_temporary(static, args, shapes)


#: Fewest chains per device a plan uses (padding with copies) unless memory or an explicit
#: ``chunk_size`` forces fewer: XLA lowers a batch of one chain differently (it drops the unit
#: batch dimension and emits the dots differently), so a lone chain's numbers would differ from
#: the same chain's in a batch, e.g. 8 chains on 8 devices vs on 1 (tests/test_scale.py).
MIN_CHAINS_PER_DEVICE = 2

#: On a CPU backend, the chains of an automatically sized batch hold at most this many estimated
#: bytes per device (``bytes_per_chain`` x chains; None: no cap). A CPU gains nothing from a batch
#: beyond what amortises the per-call work (about 1,000 chains), and bigger ones ran slower on
#: 2 cores (per chain-generation, 10 generations, 20,000-40,000 chains): linear regression d = 32
#: 1.5x in one batch of 20,000 (3 GB) than in batches of 5,000; KDE 3.4x in one of 40,000
#: (2.4 GB) than in batches of 5,000-20,000; the Gaussian sample path 1.26x in one of 20,000
#: (1.25 GB) than in batches of 1,000. Accelerators are not capped: their budget is their memory.
CPU_BATCH_BYTES: int | None = 512 << 20

#: Seconds of work a time-sized generation chunk aims at (``plan_sweep(generation_chunk=None)``):
#: long enough that a chunk boundary's fixed cost stays a few percent, short enough for progress.
#: A boundary costs more than the host's share (metrics fetch, results part, checkpoint): every
#: ``advance`` call also moves the chain state in and out of its loop, measured at ~80-125 ms per
#: call for 256 accumulate chains with 10,000-row pools (100 MB of state) on 2 cores, i.e. 4-6%
#: of a 2 s chunk; 5 s chunks keep it near 2% (benchmarks/bench_scale.py --only overhead).
CHUNK_SECONDS = 5.0

#: Largest share of a time-sized chunk the host work at its boundary may take: when writing the
#: results part and checkpoint takes ``h`` seconds, chunks aim at ``max(CHUNK_SECONDS, h /
#: HOST_SHARE)`` seconds of device work, so a slow disk cannot make the boundaries dominate.
HOST_SHARE = 0.05

#: Bytes of per-generation metrics one ``advance`` call may return per device; bounds the static
#: scan length of a time-sized plan (the metrics of a whole chain chunk are small: ~40 bytes per
#: chain-generation).
METRICS_BUDGET = 64 << 20

#: Environment variable overriding the per-device memory budget (bytes) of ``memory_budget``.
ENV_MEMORY_BUDGET = "COLLAPSE_JAX_MEMORY_BUDGET"


def memory_budget(device: Any = None) -> int:
    """Bytes a sweep may use per device: 70% of the device limit, or on CPU half the host RAM
    divided among the local devices; ``COLLAPSE_JAX_MEMORY_BUDGET`` overrides it."""
    override = _env_int(ENV_MEMORY_BUDGET)
    if override is not None:
        return override
    device = device or jax.local_devices()[0]
    stats = device.memory_stats() or {}
    if "bytes_limit" in stats:
        return int(0.7 * stats["bytes_limit"])
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # pragma: no cover - non-POSIX
        ram = 8 << 30
    return int(0.5 * ram / max(jax.local_device_count(), 1))


def plan_sweep(
    static: StaticConfig,
    args: PyTree,
    num_chains: int,
    *,
    chunk_size: int | None = None,
    generation_chunk: int | None = None,
    devices: int | None = None,
    budget: int | None = None,
) -> SweepPlan:
    """Split a sweep into chain chunks and generation chunks that fit device memory.

    Args:
        static: shapes of the chain.
        args: the source's host data.
        num_chains: real chains.
        chunk_size: chains per batch over all devices (rounded up to a multiple of ``devices``);
            None chooses the largest that fits ``budget`` (on CPU also ``CPU_BATCH_BYTES``),
            balanced so padding is small. Either
            way at least ``MIN_CHAINS_PER_DEVICE`` per device when memory (and an explicit
            ``chunk_size``) allow.
        generation_chunk: generations per ``advance`` call (fixed chunks); None sizes chunks by
            time (``CHUNK_SECONDS`` of work each, at most the whole chain or what
            ``METRICS_BUDGET`` bytes of per-generation metrics allow per device).
        devices: mesh size (default: every device).
        budget: bytes per device (default ``memory_budget()``).

    Raises:
        ConfigError: naming ``chunk_size`` when the requested chunk or even one chain per device
            does not fit the budget.
    """
    devices = devices or jax.device_count()
    budget = memory_budget() if budget is None else budget
    shapes = _generation_shapes(static, args)
    per_chain = max(bytes_per_chain(static, args, shapes=shapes), 1)
    fit = budget // per_chain  # chains per device
    need = -(-num_chains // devices)  # chains per device for one batch of everything
    if chunk_size is None:
        if fit < 1:
            raise ConfigError(
                f"chunk_size: even one chain per device does not fit: one chain of "
                f"{static.regime} n0={static.n0} n={static.n} d={static.d} "
                f"generations={static.generations} needs ~{_gib(per_chain)} and the budget is "
                f"{_gib(budget)} per device (set {ENV_MEMORY_BUDGET} if that is wrong, or make the "
                f"pool smaller: n, n0, d, generations)"
            )
        n_batches = -(-need // min(fit, _batch_cap(per_chain)))
        per_device = max(-(-need // n_batches), min(MIN_CHAINS_PER_DEVICE, fit))
    else:
        asked = -(-chunk_size // devices)
        per_device = max(min(asked, need), min(asked, MIN_CHAINS_PER_DEVICE, fit))
        if per_device > fit:
            raise ConfigError(
                f"chunk_size={chunk_size}: {per_device} chains per device need "
                f"~{_gib(per_device * per_chain)} but the budget is {_gib(budget)} per device; "
                f"use chunk_size<={max(fit, 1) * devices} or leave it unset (None) to choose "
                f"automatically"
            )
    g_rest = max(static.generations - 1, 1)
    seconds = 0.0
    if generation_chunk is None:
        metric_bytes = sum(math.prod(x.shape) * x.dtype.itemsize
                           for x in jax.tree.leaves(shapes[1]))
        generation_chunk = METRICS_BUDGET // max(per_device * metric_bytes, 1)
        seconds = CHUNK_SECONDS
    generation_chunk = max(1, min(int(generation_chunk), g_rest))
    return SweepPlan(num_chains, per_device * devices, generation_chunk, devices,
                     static.generations, seconds)


def _batch_cap(per_chain: int) -> int:
    """Most chains per device an automatic batch holds on this backend (``CPU_BATCH_BYTES``)."""
    if CPU_BATCH_BYTES is None or jax.default_backend() != "cpu":
        return 2**62
    return max(CPU_BATCH_BYTES // per_chain, MIN_CHAINS_PER_DEVICE)


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.3g} KiB"


def choose_chunk_size(static: StaticConfig, args: PyTree, num_chains: int) -> int:
    """Chains per batch of an automatic plan on one device (memory budget; on CPU also
    ``CPU_BATCH_BYTES``)."""
    return plan_sweep(static, args, num_chains, devices=1).chunk_size


# ----------------------------------------------------------------------------------------------
# Programs


def _batched(static: StaticConfig) -> Callable:
    chain = make_chain(static)

    def one(root, chain_id, hparams, args):
        state, metrics = run_chain(chain, jax.random.fold_in(root, chain_id), hparams, args)
        return state.pool.overflow, metrics

    return jax.vmap(one, in_axes=(None, 0, 0, None))


@functools.lru_cache(maxsize=64)
def compiled_sweep_fn(static: StaticConfig) -> Callable:
    """The jitted ``(root, chain_ids[C], hparams{[C]}, args) -> (overflow[C], metrics{[C, G]})``.

    One whole chain per call (no generation chunks, no sharding): the reference ``run_sweep`` is
    tested against. Cached per StaticConfig; its compile cache is keyed only by shapes (tested: no
    recompile when hyperparameter values, chain ids or root seed change).
    """
    return jax.jit(_batched(static))


def _sharded(fn: Callable, mesh: Mesh, batched: tuple[bool, ...]) -> Callable:
    """``jit(shard_map(fn))``: every device runs ``fn`` on its own block of chains.

    ``shard_map`` (not automatic partitioning) keeps the per-device program the plain vmapped
    chain on a local batch. Results are bit-identical on 1 or N devices (and hosts) at the same
    number of chains per device; with a different batch per device the Gaussian, linear
    regression and categorical families still agree bitwise (tested), KDE and GMM differ in the
    last ulp because XLA CPU's ``exp`` / ``log`` depend on the position of an element in a
    vectorised loop (see tests/test_scale.py). Keep >= 2 chains per device: a batch of one is
    lowered differently.
    """
    specs = tuple(P(AXIS) if b else P() for b in batched)
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P(AXIS), check_vma=False)
    shardings = tuple(NamedSharding(mesh, s) for s in specs)
    return jax.jit(mapped, in_shardings=shardings, out_shardings=NamedSharding(mesh, P(AXIS)))


def _chain_key(root_data: Array, impl: str, chain_id: Array) -> PRNGKey:
    return jax.random.fold_in(jax.random.wrap_key_data(root_data, impl=impl), chain_id)


@functools.lru_cache(maxsize=64)
def _init_program(static: StaticConfig, impl: str, mesh: Mesh) -> Callable:
    """Jitted ``(root_data, ids[C], hparams{[C]}, args) -> (state{[C]}, real{[C]},
    metrics{[C]})``: generation 0 of a batch of chains, chain axis sharded over ``mesh``.

    The chains' real data stays on the device for the ``advance`` calls that follow (drawing it
    again in every call cost more than the generations of a short call: 6,400 normals per chain
    for linear regression's two designs against 100 per generation). A resumed chunk gets it by
    calling this program again (same program, same bits)."""
    chain = make_chain(static)

    def one(root_data, chain_id, hparams, args):
        key = _chain_key(root_data, impl, chain_id)
        real = C.draw_real(chain, key, hparams, args)
        state, metrics = C.init(chain, key, hparams, real)
        return state, real, metrics

    return _sharded(jax.vmap(one, in_axes=(None, 0, 0, None)), mesh, (False, True, True, False))


@functools.lru_cache(maxsize=64)
def _advance_program(static: StaticConfig, impl: str, mesh: Mesh, length: int) -> Callable:
    """Jitted ``(state{[C]}, real{[C]}, start, stop, root_data, ids[C], hparams{[C]}, args) ->
    (state{[C]}, metrics{[C, length]})``: generations ``start .. stop - 1`` (at most ``length``).

    A ``fori_loop`` from the traced ``start`` to the traced ``stop`` (a while loop whose trip
    count is the same for every chain: the bounds are unbatched, so vmap keeps one loop) writes
    each generation's metrics into row ``g - start`` of a ``[length]`` buffer; rows past
    ``stop - start`` stay zero and are dropped by the host. A loop of unknown trip count is never
    unrolled or inlined, so every chunking runs the same compiled loop body and results are
    bit-identical however generations are chunked; a short chunk costs only its own generations.
    """
    chain = make_chain(static)

    def one(state, real, start, stop, root_data, chain_id, hparams, args):
        key = _chain_key(root_data, impl, chain_id)
        start = jnp.asarray(start, jnp.int32)

        def body(g, carry):
            s, buf = carry
            s, m = C.step(chain, s, g, key, hparams, real, args)
            buf = jax.tree.map(
                lambda b, x: jax.lax.dynamic_update_index_in_dim(b, x, g - start, 0), buf, m)
            return s, buf

        _, shapes = jax.eval_shape(lambda s: C.step(chain, s, start, key, hparams, real, args),
                                   state)
        buf = jax.tree.map(lambda x: jnp.zeros((length, *x.shape), x.dtype), shapes)
        return jax.lax.fori_loop(start, jnp.asarray(stop, jnp.int32), body, (state, buf))

    return _sharded(jax.vmap(one, in_axes=(0, 0, None, None, None, 0, 0, None)), mesh,
                    (True, True, False, False, False, True, True, False))


_EXECUTABLES: dict[Any, Any] = {}


def _compile(fn: Callable, example: tuple) -> Any:
    """``fn.lower(*example).compile()``, cached by the abstract signature of ``example``."""
    sig = (fn, _abstract_signature(example, sharding=True))
    if sig not in _EXECUTABLES:
        _EXECUTABLES[sig] = fn.lower(*example).compile()
    return _EXECUTABLES[sig]


def abstract_state(
    static: StaticConfig, args: PyTree, chunk_size: int, mesh: Mesh, *, real: bool = False
) -> ChainState | tuple[ChainState, RealData]:
    """``ShapeDtypeStruct``s (with the chain sharding) of a batched state of ``chunk_size``
    chains: the restore target of a checkpoint (``real=True``: and of the chains' real data)."""
    chain = make_chain(static)
    hp = _hparam_shapes(static)

    def one(k, h, a):
        data = C.draw_real(chain, k, h, a)
        return (C.init(chain, k, h, data)[0], data) if real else C.init(chain, k, h, data)[0]

    single = jax.eval_shape(one, jax.random.key(0), hp, args)
    sh = NamedSharding(mesh, P(AXIS))
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((chunk_size, *x.shape), x.dtype, sharding=sh), single
    )


def _check_compiled_memory(compiled: Any, plan: SweepPlan, budget: int, static) -> None:
    """Fail early when the backend reports the compiled batch does not fit (GPU/TPU)."""
    try:
        ma = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return
    if ma is None or not getattr(ma, "temp_size_in_bytes", 0):
        return  # CPU reports no temporaries: the eval_shape estimate stands
    total = ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes
    if total > budget:
        per_device = plan.chunk_size // plan.devices
        fits = max(1, per_device * budget // total) * plan.devices
        raise ConfigError(
            f"chunk_size={plan.chunk_size}: the compiled batch of {static.regime} n={static.n} "
            f"d={static.d} needs {_gib(total)} per device ({per_device} chains) but the budget "
            f"is {_gib(budget)}; set chunk_size<={fits}"
        )


# ----------------------------------------------------------------------------------------------
# The host loop


class _Call(NamedTuple):
    """One dispatched program call: generations ``start .. stop - 1`` of chain chunk
    ``chain_chunk`` (``real`` real chains; ``whole``: the chunk started at generation 0 here)."""

    chain_chunk: int
    start: int
    stop: int
    real: int
    whole: bool
    state: ChainState
    metrics: Metrics


class _ChunkSizer:
    """How many generations the next ``advance`` call runs.

    Fixed plans (``chunk_seconds == 0``) always run ``generation_chunk``. Time-sized plans run one
    generation first, then ``target / (seconds per generation of the device)`` within
    ``[1, generation_chunk]``, where ``target = max(chunk_seconds, host / HOST_SHARE)`` and
    ``host`` is the last boundary's host work (results part, checkpoint, progress).

    The device's rate is measured from dispatch to ready. The host handles the previous call while
    the device runs, so when the device was already idle once the host work ended (``exact=False``)
    the wait only bounds its time from above: the next call then runs at least twice as many
    generations, instead of shrinking chunks to the host's pace. On a multi-host run process 0's
    choice is used everywhere (every process must call the same programs).
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
        n = max(1, min(n, plan.generation_chunk))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            n = int(multihost_utils.broadcast_one_to_all(np.asarray(n, np.int32)))
        return n


def run_sweep(
    static: StaticConfig,
    root: PRNGKey,
    chain_ids: Any,
    hparams: Hparams,
    args: PyTree,
    *,
    chunk_size: int | None = None,
    progress: Callable[[float], None] | None = None,
    generation_chunk: int | None = None,
    mesh: Mesh | None = None,
    plan: SweepPlan | None = None,
    on_chunk: Callable[[ChunkOutput], None] | None = None,
    start: SweepStart | None = None,
) -> SweepResult:
    """Run ``len(chain_ids)`` chains of one StaticConfig: sharded, in chain and generation chunks.

    Args:
        static: shapes of the chain.
        root: root key; chain i uses ``fold_in(root, chain_ids[i])``.
        chain_ids: ``[C]`` integers (the seed of each chain).
        hparams: name -> ``[C]`` values, one per chain (scalars broadcast; cast to
            ``static.dtype``).
        args: the source's host data (``Source.load``), shared by every chain.
        chunk_size: chains per batch over all devices; None chooses from the memory estimate
            (``plan_sweep``). The last chunk is padded (with copies of its last chain) so every
            chunk reuses one compiled program.
        progress: called after every generation chunk with the chains finished so far (fractional:
            ``chains x generations done / generations``, all hosts together).
        generation_chunk: generations per compiled ``advance`` call; None sizes the calls by
            time (see ``plan_sweep``). Results do not depend on it.
        mesh: 1-d device mesh with axis ``'chains'`` (default ``make_mesh()``: every device).
        plan: a stored plan (resume); overrides ``chunk_size`` and ``generation_chunk``.
        on_chunk: called at every generation-chunk boundary (results parts, checkpoints).
        start: resume point; chain chunks before it are skipped.

    Returns:
        A SweepResult with ``[C, generations]`` metrics of this process's chains (rows of
        skipped chunks, on a resumed run, are absent: see ``positions``).

    >>> import jax, numpy as np
    >>> from collapse_jax import StaticConfig, run_sweep
    >>> static = StaticConfig(model="gaussian", regime="replace", n0=8, n=8, d=2, generations=4,
    ...                       n_test=8)
    >>> r = run_sweep(static, jax.random.key(0), np.arange(3), {"sigma": 1.0, "scale": 1.0}, {},
    ...               generation_chunk=2)
    >>> r.metrics["trace_ratio"].shape, r.positions.tolist()
    ((3, 4), [0, 1, 2])
    """
    ids = np.asarray(chain_ids, dtype=np.int32).reshape(-1)
    num = ids.shape[0]
    if num == 0:
        raise ConfigError("chain_ids: empty; give at least one chain")
    hp = {k: np.broadcast_to(np.asarray(v, static.dtype), (num,)) for k, v in hparams.items()}
    mesh = make_mesh() if mesh is None else mesh
    n_dev = mesh.devices.size
    if plan is None:
        plan = plan_sweep(static, args, num, chunk_size=chunk_size,
                          generation_chunk=generation_chunk, devices=n_dev)
    if plan.chunk_size % n_dev or plan.num_chains != num:
        raise ConfigError(f"chunk_size={plan.chunk_size}: must be a multiple of the {n_dev} "
                          f"devices (plan for {plan.num_chains} chains, sweep of {num})")
    chunk, G, L = plan.chunk_size, static.generations, plan.generation_chunk
    n_chunks = plan.n_chunks
    pad = n_chunks * chunk - num
    ids_p = np.concatenate([ids, np.repeat(ids[-1:], pad)])
    hp_p = {k: np.concatenate([v, np.repeat(v[-1:], pad)]) for k, v in hp.items()}
    sh = NamedSharding(mesh, P(AXIS))

    impl = str(jax.random.key_impl(root))
    root_data = _put_replicated(np.asarray(jax.random.key_data(root)), mesh)
    args_g = _put_replicated(args, mesh)

    t0 = time.perf_counter()
    init_fn = _init_program(static, impl, mesh)
    ex_ids = jax.ShapeDtypeStruct((chunk,), jnp.int32, sharding=sh)
    ex_hp = {k: jax.ShapeDtypeStruct((chunk,), jnp.dtype(static.dtype), sharding=sh) for k in hp_p}
    init_c = _compile(init_fn, (root_data, ex_ids, ex_hp, args_g))
    adv_c = None
    if G > 1:
        adv_fn = _advance_program(static, impl, mesh, L)
        ex_state, ex_real = abstract_state(static, args, chunk, mesh, real=True)
        ex_start = jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(mesh, P()))
        adv_c = _compile(adv_fn, (ex_state, ex_real, ex_start, ex_start, root_data, ex_ids,
                                  ex_hp, args_g))
        _check_compiled_memory(adv_c, plan, memory_budget(), static)
    compile_seconds = time.perf_counter() - t0

    first = 0 if start is None else start.chain_chunk
    done = [float(min(first * chunk, num))]
    sizer = _ChunkSizer(plan)
    positions, metric_rows, overflow_rows = [], [], []
    pieces: list[dict[str, np.ndarray]] = []

    def finish(call: _Call) -> None:
        """Host side of a finished call: fetch this process's rows, hand them on."""
        rows, (m_host, ovf) = _local_rows((call.metrics, call.state.pool.overflow), call.real)
        m_host = {k: v[:, : call.stop - call.start] for k, v in m_host.items()}
        done[0] += call.real * (call.stop - call.start) / G
        if on_chunk is not None:
            on_chunk(ChunkOutput(call.chain_chunk, call.start, call.stop,
                                 call.chain_chunk * chunk + rows, m_host, ovf, call.state, plan))
        if progress is not None:
            progress(done[0])
        if call.whole:  # the chain chunk ran here from generation 0: keep its rows
            pieces.append(m_host)
            if call.stop == G:
                positions.append(call.chain_chunk * chunk + rows)
                metric_rows.append({k: np.concatenate([p[k] for p in pieces], axis=1)
                                    for k in pieces[0]})
                overflow_rows.append(ovf)
                pieces.clear()

    t0 = time.perf_counter()
    pending: _Call | None = None
    for c in range(first, n_chunks):
        sl = slice(c * chunk, (c + 1) * chunk)
        real_in_chunk = min(chunk, num - c * chunk)
        ids_c = _put_sharded(ids_p[sl], sh)
        hp_c = {k: _put_sharded(v[sl], sh) for k, v in hp_p.items()}
        g = start.generation if (start is not None and c == first) else 0
        state = start.state if g > 0 else None
        if g > 0:
            done[0] += real_in_chunk * g / G
            _, real, _ = init_c(root_data, ids_c, hp_c, args_g)  # the chunk's real data
        whole = g == 0
        while g < G:
            tick = time.perf_counter()
            if g == 0:
                stop = 1
                state, real, m = init_c(root_data, ids_c, hp_c, args_g)
                m = jax.tree.map(lambda x: x[:, None], m)
            else:
                stop = min(g + sizer.length(), G)
                g_0, g_1 = _put_replicated((np.int32(g), np.int32(stop)), mesh)
                state, m = adv_c(state, real, g_0, g_1, root_data, ids_c, hp_c, args_g)
            # the host handles the previous call's outputs while this one runs
            host, busy = 0.0, True
            if pending is not None:
                h0 = time.perf_counter()
                finish(pending)
                host = time.perf_counter() - h0
                busy = not all(x.is_ready() for x in jax.tree.leaves(m))
            jax.block_until_ready(m)
            sizer.record(stop - g, time.perf_counter() - tick, init=g == 0, host=host,
                         exact=busy)
            pending = _Call(c, g, stop, real_in_chunk, whole, state, m)
            g = stop
    if pending is not None:
        finish(pending)
    run_seconds = time.perf_counter() - t0

    if positions:
        pos = np.concatenate(positions)
        metrics = {k: np.concatenate([m[k] for m in metric_rows]) for k in metric_rows[0]}
        overflow = np.concatenate(overflow_rows)
    else:
        pos = np.zeros((0,), np.int64)
        metrics, overflow = {}, np.zeros((0,), bool)
    return SweepResult(metrics, overflow, compile_seconds, run_seconds, chunk, pos, L)
