"""The compiled programs of a sweep: ``jit`` + ``shard_map`` around ``chain.py``, and their cache.

Three programs per StaticConfig, each vmapped over a batch of chains whose axis is sharded over
the mesh (``mesh.AXIS``); the root key, host data and generation bounds are replicated:

- ``init``: draw each chain's real data and fit generation 0 (the real data stays on the device
  for the calls that follow, and is drawn again by this program on resume: same program, same
  bits);
- ``advance``: generations ``start .. stop - 1`` (``chain.advance``; a loop of static length
  ``length`` whose traced bounds serve chunks of any length);
- ``snapshot``: samples of the first chains' fitted models, for pictures.

``compile_sweep`` lowers and compiles them for a plan (cached by shapes and shardings), so a
caller can time compilation apart from running.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.compilation_cache import compilation_cache
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from collapse_jax import chain as C
from collapse_jax import compiling
from collapse_jax.compiling import compile_jobs
from collapse_jax.config import ConfigError, StaticConfig
from collapse_jax.mesh import AXIS
from collapse_jax.plan import (
    SweepPlan,
    clear_plan_caches,
    gib,
    hparam_shapes,
    memory_budget,
)
from collapse_jax.types import Array, PRNGKey, PyTree


def chain_key(root_data: Array, impl: str, chain_id: Array) -> PRNGKey:
    """``fold_in(root, chain_id)``, the root passed as key data (a replicated array)."""
    return jax.random.fold_in(jax.random.wrap_key_data(root_data, impl=impl), chain_id)


def _sharded(fn: Callable, mesh: Mesh, batched: tuple[bool, ...], out_batched: Any = True
             ) -> Callable:
    """``jit(shard_map(fn))``: every device runs ``fn`` on its own block of chains.

    ``shard_map`` (not automatic partitioning) keeps the per-device program the plain vmapped
    chain on a local batch. Results are bit-identical on 1 or N devices (and hosts) at the same
    number of chains per device; with a different batch per device linear regression and
    categorical still agree bitwise (tested), while values computed through XLA CPU's ``exp`` /
    ``log`` (KDE, GMM, the Gaussian's ``logdet_ratio``) can differ in the last 1-2 ulp: they
    depend on the position of an element in a vectorised loop (tests/test_sweep.py). Keep >= 2
    chains per device: a batch of one is lowered differently.
    """
    specs = tuple(P(AXIS) if b else P() for b in batched)
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P(AXIS), check_vma=False)
    shardings = tuple(NamedSharding(mesh, s) for s in specs)
    return jax.jit(mapped, in_shardings=shardings, out_shardings=NamedSharding(mesh, P(AXIS)))


@functools.lru_cache(maxsize=64)
def init_program(static: StaticConfig, impl: str, mesh: Mesh) -> Callable:
    """``(root_data, ids[C], hparams{[C]}, args) -> (state{[C]}, real{[C]}, metrics{[C]})``."""
    chain = C.make_chain(static)

    def one(root_data, chain_id, hparams, args):
        key = chain_key(root_data, impl, chain_id)
        real = C.draw_real(chain, key, hparams, args)
        state, metrics = C.init(chain, key, hparams, real)
        return state, real, metrics

    return _sharded(jax.vmap(compiling.named(one, "init"), in_axes=(None, 0, 0, None)), mesh,
                    (False, True, True, False))


@functools.lru_cache(maxsize=64)
def advance_program(static: StaticConfig, impl: str, mesh: Mesh, length: int) -> Callable:
    """``(state{[C]}, real{[C]}, start, stop, root_data, ids[C], hparams{[C]}, args) ->
    (state{[C]}, metrics{[C, length]})``: generations ``start .. stop - 1`` (at most
    ``length``); metric rows past ``stop - start`` are zero."""
    chain = C.make_chain(static)

    def one(state, real, start, stop, root_data, chain_id, hparams, args):
        key = chain_key(root_data, impl, chain_id)
        return C.advance(chain, state, start, stop, length, key, hparams, real, args)

    return _sharded(jax.vmap(compiling.named(one, "advance"),
                             in_axes=(0, 0, None, None, None, 0, 0, None)), mesh,
                    (True, True, False, False, False, True, True, False))


@functools.lru_cache(maxsize=64)
def snapshot_program(static: StaticConfig, impl: str, mesh: Mesh, num: int) -> Callable:
    """``(state{[C]}, real{[C]}, generation, root_data, ids[C], hparams{[C]}) -> samples``:
    ``num`` samples of the first chain's model fit at ``generation`` (replicated output)."""
    chain = C.make_chain(static)

    def first(state, real, generation, root_data, ids, hparams):
        pick = lambda tree: jax.tree.map(lambda x: x[0], tree)
        key = chain_key(root_data, impl, ids[0])
        return C.snapshot(chain, pick(state), generation, key, pick(hparams), pick(real), num)

    return jax.jit(compiling.named(first, "snapshot"), out_shardings=NamedSharding(mesh, P()))


@functools.lru_cache(maxsize=64)
def reference_program(static: StaticConfig) -> Callable:
    """The jitted ``(root, chain_ids[C], hparams{[C]}, args) -> (overflow[C], metrics{[C, G]})``:
    whole chains in one call (``chain.run_chain`` vmapped; no generation chunks, no sharding),
    the reference the chunked, sharded sweep is tested against. Its compile cache is keyed only
    by shapes (tested: no recompile when hyperparameter values, chain ids or root change)."""
    chain = C.make_chain(static)

    def one(root, chain_id, hparams, args):
        state, metrics = C.run_chain(chain, jax.random.fold_in(root, chain_id), hparams, args)
        return state.pool.overflow, metrics

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, None)))


def abstract_state(static: StaticConfig, args: PyTree, chunk_size: int, mesh: Mesh) -> Any:
    """``ShapeDtypeStruct``s (with the chain sharding) of a batch of ``chunk_size`` chains'
    ``(state, real data)``: the restore target of a checkpoint, and the compile example of
    ``advance``."""
    chain = C.make_chain(static)

    def one(k, h, a):
        real = C.draw_real(chain, k, h, a)
        return C.init(chain, k, h, real)[0], real

    single = jax.eval_shape(one, jax.random.key(0), hparam_shapes(static), args)
    sh = NamedSharding(mesh, P(AXIS))
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((chunk_size, *x.shape), x.dtype, sharding=sh), single)


#: Environment variable: directory of the persistent compilation cache collapse_jax turns on
#: (default ``~/.cache/collapse_jax/xla``); ``off`` (or empty) disables it.
ENV_CACHE = "COLLAPSE_JAX_CACHE_DIR"

#: Programs compiling faster than this (seconds) are not written to the persistent cache (the
#: many tiny programs of eager array operations); sweep programs take 0.3 s and more.
MIN_CACHED_COMPILE_SECS = 0.1


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache (every sweep calls this); return its directory.

    A rerun of a config (or of any config with the same shapes), through the CLI or the Python
    API, then loads its compiled programs from disk instead of compiling them (seconds each on
    CPU). Programs that compiled in under ``MIN_CACHED_COMPILE_SECS`` are not stored (JAX's
    ``jax_persistent_cache_min_compile_time_secs``, whose default of one second would skip most
    programs compiled with ``compile="fast"``, a warm README command 1 then recompiling 12
    programs; a value the user set through ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` is
    kept). A directory the user configured for JAX (``JAX_COMPILATION_CACHE_DIR``) is kept;
    ``COLLAPSE_JAX_CACHE_DIR=off`` turns it off. The setting stays for the rest of the process.
    The cache is trusted code: keep it private (see the JAX documentation, "Persistent
    compilation cache").
    """
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    path = os.environ.get(ENV_CACHE, str(Path.home() / ".cache" / "collapse_jax" / "xla"))
    if path.strip().lower() in ("", "off", "0", "none"):
        return None
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_CACHED_COMPILE_SECS)
    jax.config.update("jax_compilation_cache_dir", path)
    compilation_cache.reset_cache()  # JAX decides on first use; a compile before may have run
    return path


def clear_caches() -> None:
    """Drop every compiled program collapse_jax and JAX hold in this process, and the memory
    estimates: their memory (and memory maps) is released. A long session (a notebook, a test
    run) that compiles hundreds of distinct programs calls this between experiments; the
    persistent compilation cache on disk is untouched.

    >>> from collapse_jax import clear_caches
    >>> clear_caches()
    >>> len(compiling._EXECUTABLES), init_program.cache_info().currsize
    (0, 0)
    """
    compiling.clear()
    for program in (init_program, advance_program, snapshot_program, reference_program):
        program.cache_clear()
    clear_plan_caches()
    jax.clear_caches()


class Programs(NamedTuple):
    """The compiled programs of one group (``advance`` is None for a one-generation chain,
    ``snapshot`` None when no samples are kept)."""

    init: Any
    advance: Any
    snapshot: Any


def compile_sweep(static: StaticConfig, hparams: Mapping[str, Any], args_g: PyTree,
                  root_data: Array, impl: str, plan: SweepPlan, mesh: Mesh, snapshot: int = 0,
                  mode: str = "optimized") -> Programs:
    """Compile (or fetch from the cache) the programs of a sweep of ``static`` under ``plan``.

    ``hparams`` (name -> host array: names and dtypes), ``args_g`` and ``root_data`` (the
    replicated host data and root key data) are what the programs will be called with; ``mode``
    is ``Experiment.compile`` (``compiling.COMPILER_OPTIONS``). Raises
    ``ConfigError`` when the backend reports that the compiled batch does not fit the memory
    budget (GPU / TPU; CPU reports no temporaries).
    """
    enable_compilation_cache()
    sh = NamedSharding(mesh, P(AXIS))
    ids = jax.ShapeDtypeStruct((plan.chunk_size,), jnp.int32, sharding=sh)
    hp = {k: jax.ShapeDtypeStruct((plan.chunk_size,), np.asarray(v).dtype, sharding=sh)
          for k, v in hparams.items()}
    scalar = jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(mesh, P()))
    jobs = {"init": (init_program(static, impl, mesh), (root_data, ids, hp, args_g))}
    recipes = [("init", impl)]
    state, real = abstract_state(static, args_g, plan.chunk_size, mesh)
    if static.generations > 1:
        jobs["advance"] = (advance_program(static, impl, mesh, plan.generation_chunk),
                           (state, real, scalar, scalar, root_data, ids, hp, args_g))
        recipes.append(("advance", impl, plan.generation_chunk))
    if snapshot > 0:
        jobs["snapshot"] = (snapshot_program(static, impl, mesh, snapshot),
                            (state, real, scalar, root_data, ids, hp))
        recipes.append(("snapshot", impl, snapshot))
    compiled = dict(zip(jobs, compile_jobs(list(jobs.values()), mode, recipes, static,
                                           list(mesh.devices.flat)), strict=True))
    advance = compiled.get("advance")
    if advance is not None:
        _check_memory(advance, plan, memory_budget(), static)
    init, snap = compiled["init"], compiled.get("snapshot")
    return Programs(init, advance, snap)


def _examples(static: StaticConfig, args: PyTree, chains: int, length: int
              ) -> dict[str, tuple[Callable, tuple]]:
    """The ``init`` and ``advance`` programs of ``chains`` chains on one device, each with
    abstract arguments to trace or lower it with."""
    mesh = Mesh(np.asarray(jax.devices()[:1]), (AXIS,))
    sh, rep = NamedSharding(mesh, P(AXIS)), NamedSharding(mesh, P())
    key_data = jax.random.key_data(jax.random.key(0))
    root = jax.ShapeDtypeStruct(key_data.shape, key_data.dtype, sharding=rep)
    ids = jax.ShapeDtypeStruct((chains,), jnp.int32, sharding=sh)
    hp = {k: jax.ShapeDtypeStruct((chains,), v.dtype, sharding=sh)
          for k, v in hparam_shapes(static).items()}
    impl = str(jax.random.key_impl(jax.random.key(0)))
    state, real = abstract_state(static, args, chains, mesh)
    g = jax.ShapeDtypeStruct((), jnp.int32, sharding=rep)
    return {"init": (init_program(static, impl, mesh), (root, ids, hp, args)),
            "advance": (advance_program(static, impl, mesh, length),
                        (state, real, g, g, root, ids, hp, args))}


def program_jaxprs(static: StaticConfig, args: PyTree, chains: int = 2, length: int = 2
                   ) -> dict[str, Any]:
    """The ``init`` and ``advance`` programs of ``chains`` chains of ``static`` as jaxprs (traced,
    not lowered or compiled): what compile-time budgets measure (``program_size``)."""
    return {name: jax.make_jaxpr(fn)(*example)
            for name, (fn, example) in _examples(static, args, chains, length).items()}


def lower_programs(static: StaticConfig, args: PyTree, chains: int = 2, length: int = 2
                   ) -> dict[str, Any]:
    """The same programs lowered (``.compile()`` each to time XLA's part)."""
    return {name: fn.lower(*example)
            for name, (fn, example) in _examples(static, args, chains, length).items()}


def program_size(jaxpr: Any) -> int:
    """Equations of a jaxpr with every call expanded (a function called twice counts twice, as
    XLA inlines it) and every loop or branch body counted once: a proxy for compile time."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        inner = [getattr(p, "jaxpr", p) for v in eqn.params.values()
                 for p in (v if isinstance(v, list | tuple) else (v,))]
        inner = [j for j in inner if hasattr(j, "eqns")]
        total += sum(program_size(j) for j in inner) if inner else 1
    return total


def _check_memory(compiled: Any, plan: SweepPlan, budget: int, static: StaticConfig) -> None:
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
            f"d={static.d} needs {gib(total)} per device ({per_device} chains) but the budget "
            f"is {gib(budget)}; set chunk_size<={fits}")
