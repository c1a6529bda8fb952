"""The one planner: how many chains a compiled batch holds and how generations are chunked.

``plan_sweep`` sizes one group (a StaticConfig): a memory estimate per chain (``bytes_per_chain``,
from ``jax.eval_shape`` and a traced jaxpr, nothing compiled) against the per-device budget,
rounded to the devices, at least ``MIN_CHAINS_PER_DEVICE`` per device, capped on CPU by
``CPU_BATCH_BYTES``; and the static length of the ``advance`` program. ``plan_run`` plans every
group of a resolved run; the run and ``--dry-run`` both use it, so a dry run prints the chunk
sizes the run will use.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from collapse_jax import chain as C
from collapse_jax.config import ConfigError, StaticConfig
from collapse_jax.mesh import env_int
from collapse_jax.model import get_model_spec
from collapse_jax.regimes import regime_hparams
from collapse_jax.types import PyTree
from collapse_jax.validate import RunSpec

#: Fewest chains per device a plan uses (padding with copies) unless memory or an explicit
#: ``chunk_size`` forces fewer: XLA lowers a batch of one chain differently (it drops the unit
#: batch dimension and emits the dots differently), so a lone chain's numbers would differ from
#: the same chain's in a batch, e.g. 8 chains on 8 devices vs on 1 (tests/test_sweep.py).
MIN_CHAINS_PER_DEVICE = 2

#: On a CPU backend, the chains of an automatically sized batch hold at most this many estimated
#: bytes per device (``bytes_per_chain`` x chains; None: no cap): a CPU gains nothing from a
#: batch beyond what amortises the per-call work, and bigger ones ran slower per
#: chain-generation (benchmarks/README.md, "CPU batch cap"). Accelerators are not capped: their
#: budget is their memory.
CPU_BATCH_BYTES: int | None = 512 << 20

#: Seconds of work a time-sized generation chunk aims at (``plan_sweep(generation_chunk=None)``):
#: long enough that a chunk boundary's fixed cost (metrics fetch, results part, checkpoint, and
#: moving the chain state in and out of the loop) stays a few percent, short enough for progress.
CHUNK_SECONDS = 5.0

#: Bytes of per-generation metrics one ``advance`` call may return per device; bounds the static
#: loop length of a time-sized plan.
METRICS_BUDGET = 64 << 20

#: Environment variable overriding the per-device memory budget (bytes) of ``memory_budget``.
ENV_MEMORY_BUDGET = "COLLAPSE_JAX_MEMORY_BUDGET"


class SweepPlan(NamedTuple):
    """How a sweep of one StaticConfig is split (fixed before launch, stored in checkpoints).

    Attributes:
        num_chains: real chains.
        chunk_size: chains per compiled batch, all devices together (a multiple of ``devices``).
        generation_chunk: static loop length of the ``advance`` program: the most generations
            one call runs (>= 1).
        devices: size of the mesh.
        generations: generations per chain.
        chunk_seconds: > 0: size each call to about this many seconds of measured work (at most
            ``generation_chunk`` generations); 0: every call runs ``generation_chunk``.
        bytes_per_chain: the memory estimate the plan was sized with.
    """

    num_chains: int
    chunk_size: int
    generation_chunk: int
    devices: int
    generations: int
    chunk_seconds: float = 0.0
    bytes_per_chain: int = 0

    @property
    def n_chunks(self) -> int:
        return -(-self.num_chains // self.chunk_size)


def precision(static: StaticConfig):
    """A context enabling ``jax_enable_x64`` for a float64 config (nothing for float32); the flag
    is restored on exit, so a float64 run never changes later float32 work."""
    return jax.enable_x64(True) if static.dtype == "float64" else contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------
# Memory estimate


def hparam_defaults(static: StaticConfig) -> dict[str, float]:
    """Every hyperparameter one chain reads, with its default: the model's and the regime's.

    >>> from collapse_jax import StaticConfig
    >>> hparam_defaults(StaticConfig("gaussian", "fixed_real_mix", n0=8, n=8, d=2, generations=3))
    {'sigma': 1.0, 'scale': 1.0, 'lam': 1.0}
    """
    return {**get_model_spec(static.model).hparams, **regime_hparams((static.regime,))}


def hparam_shapes(static: StaticConfig) -> dict[str, jax.ShapeDtypeStruct]:
    """Abstract hyperparameters of one chain: the model's and the regime's, scalars of
    ``static.dtype``."""
    return {k: jax.ShapeDtypeStruct((), jnp.dtype(static.dtype)) for k in hparam_defaults(static)}


def generation_shapes(static: StaticConfig, args: PyTree) -> tuple[Any, Any, Any]:
    """``jax.eval_shape`` of one chain's generation 0: ``(state, metrics, real data)``."""
    chain = C.make_chain(static)

    def one(k, h, a):
        real = C.draw_real(chain, k, h, a)
        state, metrics = C.init(chain, k, h, real)
        return state, metrics, real

    return jax.eval_shape(one, jax.random.key(0), hparam_shapes(static), args)


def nbytes(aval: Any) -> int:
    """Bytes of an abstract array (0 for a PRNG key or anything without a plain dtype)."""
    try:
        return math.prod(aval.shape) * np.dtype(aval.dtype).itemsize
    except (AttributeError, TypeError):
        return 0


def largest_array(jaxpr: Any) -> int:
    """Bytes of the largest array any equation of ``jaxpr`` (or of its sub-jaxprs: loop bodies,
    ``custom_vmap`` rules, ...) produces."""
    best = 0
    for eqn in jaxpr.eqns:
        best = max([best, *(nbytes(v.aval) for v in eqn.outvars)])
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds its Jaxpr
                if hasattr(inner, "eqns"):
                    best = max(best, largest_array(inner))
    return best


def abstract_signature(tree: PyTree, *, sharding: bool) -> tuple:
    """Hashable structure, shapes and dtypes (and shardings) of ``tree``: a cache key of what a
    trace or a compile depends on (values do not enter)."""
    return (jax.tree.structure(tree), tuple(
        (np.shape(x), str(getattr(x, "dtype", type(x).__name__)))
        + ((str(getattr(x, "sharding", "")),) if sharding else ())
        for x in jax.tree.leaves(tree)))


_LARGEST: dict[Any, int] = {}


def clear_plan_caches() -> None:
    """Forget the traced memory estimates (``programs.clear_caches`` calls this)."""
    _LARGEST.clear()


def largest_temporary(static: StaticConfig, args: PyTree, shapes: Any) -> int:
    """Bytes of the largest intermediate array of one chain's generation 0 or later generation
    (traced with ``jax.make_jaxpr``, nothing compiled; cached by config and argument shapes),
    e.g. the KDE's ``[n_test, capacity]`` kernel matrix."""
    sig = (static, abstract_signature(args, sharding=False))
    if sig not in _LARGEST:
        chain = C.make_chain(static)
        state, _, real = shapes
        hp, key = hparam_shapes(static), jax.random.key(0)

        def first(k, h, a):
            return C.init(chain, k, h, C.draw_real(chain, k, h, a))

        def later(s, k, h, r, a):
            return C.step(chain, s, jnp.int32(1), k, h, r, a)

        _LARGEST[sig] = max(largest_array(jax.make_jaxpr(first)(key, hp, args).jaxpr),
                            largest_array(jax.make_jaxpr(later)(state, key, hp, real, args).jaxpr))
    return _LARGEST[sig]


def bytes_per_chain(static: StaticConfig, args: PyTree, factor: float = 4.0, *,
                    shapes: Any = None) -> int:
    """Estimated device bytes one chain needs inside a vmapped batch.

    ``factor`` times what the chain keeps (its state: pool and parameters; its real data: train,
    test, truth; one generation's metrics; from ``jax.eval_shape``), for a generation's
    temporaries of the same size (sample block, pool update, fit), plus the largest intermediate
    array of a generation (``largest_temporary``), which can dwarf the state (the KDE's
    test-by-pool kernel matrix). The sweep checks the estimate against the compiled program's
    ``memory_analysis()`` where the backend reports temporaries (GPU, TPU). ``shapes``: a
    precomputed ``generation_shapes(static, args)``.
    """
    shapes = generation_shapes(static, args) if shapes is None else shapes
    kept = sum(nbytes(x) for x in jax.tree.leaves(shapes))
    return int(factor * kept) + largest_temporary(static, args, shapes)


def memory_budget(device: Any = None) -> int:
    """Bytes a sweep may use per device: 70% of the device limit, or on CPU half the host RAM
    divided among the local devices; ``COLLAPSE_JAX_MEMORY_BUDGET`` overrides it."""
    override = env_int(ENV_MEMORY_BUDGET)
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


def gib(n: float) -> str:
    """Bytes for a message: ``'1.5 GiB'`` or ``'12 KiB'``."""
    return f"{n / 2**30:.3g} GiB" if n >= 2**20 else f"{n / 2**10:.3g} KiB"


# ----------------------------------------------------------------------------------------------
# Plans


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
            balanced so padding is small. Either way at least ``MIN_CHAINS_PER_DEVICE`` per
            device when memory (and an explicit ``chunk_size``) allow.
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
    with precision(static):
        shapes = generation_shapes(static, args)
        per_chain = max(bytes_per_chain(static, args, shapes=shapes), 1)
    fit = budget // per_chain  # chains per device
    need = -(-num_chains // devices)  # chains per device for one batch of everything
    if chunk_size is None:
        if fit < 1:
            raise ConfigError(
                f"chunk_size: even one chain per device does not fit: one chain of "
                f"{static.regime} n0={static.n0} n={static.n} d={static.d} "
                f"generations={static.generations} needs ~{gib(per_chain)} and the budget is "
                f"{gib(budget)} per device (set {ENV_MEMORY_BUDGET} if that is wrong, or make the "
                f"pool smaller: n, n0, d, generations)")
        n_batches = -(-need // min(fit, _batch_cap(per_chain)))
        per_device = max(-(-need // n_batches), min(MIN_CHAINS_PER_DEVICE, fit))
    else:
        asked = -(-chunk_size // devices)
        per_device = max(min(asked, need), min(asked, MIN_CHAINS_PER_DEVICE, fit))
        if per_device > fit:
            raise ConfigError(
                f"chunk_size={chunk_size}: {per_device} chains per device need "
                f"~{gib(per_device * per_chain)} but the budget is {gib(budget)} per device; "
                f"use chunk_size<={max(fit, 1) * devices} or leave it unset (None) to choose "
                f"automatically")
    g_rest = max(static.generations - 1, 1)
    seconds = 0.0
    if generation_chunk is None:
        metric_bytes = sum(nbytes(x) for x in jax.tree.leaves(shapes[1]))
        generation_chunk = METRICS_BUDGET // max(per_device * metric_bytes, 1)
        seconds = CHUNK_SECONDS
    generation_chunk = max(1, min(int(generation_chunk), g_rest))
    return SweepPlan(num_chains, per_device * devices, generation_chunk, devices,
                     static.generations, seconds, per_chain)


def _batch_cap(per_chain: int) -> int:
    """Most chains per device an automatic batch holds on this backend (``CPU_BATCH_BYTES``)."""
    if CPU_BATCH_BYTES is None or jax.default_backend() != "cpu":
        return 2**62
    return max(CPU_BATCH_BYTES // per_chain, MIN_CHAINS_PER_DEVICE)


def plan_group(spec: RunSpec, group: int, devices: int | None = None) -> SweepPlan:
    """The plan of group ``group`` of a resolved run (what the run uses)."""
    exp = spec.experiment
    return plan_sweep(spec.statics[group], spec.args[group], spec.chains,
                      chunk_size=exp.chunk_size, generation_chunk=exp.generation_chunk,
                      devices=devices)


def plan_run(spec: RunSpec, devices: int | None = None) -> list[SweepPlan]:
    """The plan of every group of a resolved run, in run order."""
    return [plan_group(spec, i, devices) for i in range(len(spec.statics))]
