"""Many chains: ``vmap`` over chain ids and hyperparameters, chunked to fit memory.

Chain ``i`` uses the key ``fold_in(root, chain_ids[i])`` and its own hyperparameters, so a chain's
numbers do not depend on which batch or chunk it ran in: a chunked sweep is bit-identical to an
unchunked one. One compile per StaticConfig and chunk size; hyperparameter values and chain ids are
arguments, so a new sweep over them reuses the compiled program.
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

from collapse_jax.chain import ChainState, make_chain, run_chain
from collapse_jax.config import StaticConfig
from collapse_jax.types import Array, Hparams, Metrics, PRNGKey, PyTree


class SweepResult(NamedTuple):
    """Host-side outputs of a sweep.

    Attributes:
        metrics: metric name -> ``[chains, generations]`` numpy array.
        overflow: ``[chains]`` bool, a pool write was dropped (capacity too small).
        compile_seconds: time spent compiling (0 when the program was cached).
        run_seconds: time spent running the compiled program(s).
        chunk_size: chains per compiled batch.
    """

    metrics: dict[str, np.ndarray]
    overflow: np.ndarray
    compile_seconds: float
    run_seconds: float
    chunk_size: int


def chain_keys(root: PRNGKey, chain_ids: Array) -> PRNGKey:
    """``fold_in(root, id)`` for every id: the key of each chain."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(root, chain_ids)


def _batched(static: StaticConfig) -> Callable:
    chain = make_chain(static)

    def one(root, chain_id, hparams, args):
        state, metrics = run_chain(chain, jax.random.fold_in(root, chain_id), hparams, args)
        return state.pool.overflow, metrics

    return jax.vmap(one, in_axes=(None, 0, 0, None))


@functools.lru_cache(maxsize=64)
def compiled_sweep_fn(static: StaticConfig) -> Callable:
    """The jitted ``(root, chain_ids[C], hparams{[C]}, args) -> (overflow[C], metrics{[C, G]})``.

    Cached per StaticConfig; its compile cache is keyed only by shapes (tested: no recompile when
    hyperparameter values, chain ids or root seed change).
    """
    return jax.jit(_batched(static))


def state_shapes(static: StaticConfig, args: PyTree) -> tuple[ChainState, Metrics]:
    """Shapes and dtypes of one chain's final state and metrics, without running it."""
    chain = make_chain(static)
    from collapse_jax.model import get_model_spec

    dt = jnp.dtype(static.dtype)
    hp = {k: jax.ShapeDtypeStruct((), dt) for k in get_model_spec(static.model).hparams}
    return jax.eval_shape(
        lambda k, h, a: run_chain(chain, k, h, a), jax.random.key(0), hp, args
    )


def bytes_per_chain(static: StaticConfig, args: PyTree, factor: float = 4.0) -> int:
    """Estimated device bytes one chain needs inside a vmapped batch.

    The chain state (pool and parameters) and its metrics come from ``jax.eval_shape``; ``factor``
    covers the temporaries of one generation (sample block, pool update, fit).
    """
    state, metrics = state_shapes(static, args)
    leaves = jax.tree.leaves((state, metrics))
    nbytes = sum(math.prod(x.shape) * x.dtype.itemsize for x in leaves)
    return int(factor * nbytes)


def memory_budget() -> int:
    """Bytes a sweep may use on the default device (half the host RAM on CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(0.7 * stats["bytes_limit"])
    try:
        return int(0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):  # pragma: no cover - non-POSIX
        return 4 << 30


def choose_chunk_size(static: StaticConfig, args: PyTree, num_chains: int) -> int:
    """The largest number of chains per batch that fits the memory budget (at least 1)."""
    per_chain = max(bytes_per_chain(static, args), 1)
    return int(max(1, min(num_chains, memory_budget() // per_chain)))


_EXECUTABLES: dict[Any, Any] = {}


def _compile(fn: Callable, example: tuple) -> Any:
    """``fn.lower(*example).compile()``, cached by the abstract signature of ``example``."""
    sig = (fn, jax.tree.structure(example), tuple(
        (np.shape(x), str(getattr(x, "dtype", type(x).__name__))) for x in jax.tree.leaves(example)
    ))
    if sig not in _EXECUTABLES:
        _EXECUTABLES[sig] = fn.lower(*example).compile()
    return _EXECUTABLES[sig]


def run_sweep(
    static: StaticConfig,
    root: PRNGKey,
    chain_ids: Any,
    hparams: Hparams,
    args: PyTree,
    *,
    chunk_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SweepResult:
    """Run ``len(chain_ids)`` chains of one StaticConfig, vmapped, in chunks of chains.

    Args:
        static: shapes of the chain.
        root: root key; chain i uses ``fold_in(root, chain_ids[i])``.
        chain_ids: ``[C]`` integers (the seed of each chain).
        hparams: name -> ``[C]`` values, one per chain (cast to ``static.dtype``).
        args: the source's host data (``Source.load``), shared by every chain.
        chunk_size: chains per batch; None chooses from the memory estimate. The last chunk is
            padded (with copies of its last chain) so every chunk reuses one compiled program.
        progress: called with the number of chains finished after each chunk.

    Returns:
        A SweepResult with ``[C, generations]`` metrics.
    """
    ids = np.asarray(chain_ids, dtype=np.int32)
    num = ids.shape[0]
    hp = {k: np.broadcast_to(np.asarray(v, static.dtype), (num,)) for k, v in hparams.items()}
    chunk = chunk_size or choose_chunk_size(static, args, num)
    chunk = min(chunk, num)
    fn = compiled_sweep_fn(static)

    n_chunks = -(-num // chunk)
    pad = n_chunks * chunk - num
    ids_p = np.concatenate([ids, np.repeat(ids[-1:], pad)])
    hp_p = {k: np.concatenate([v, np.repeat(v[-1:], pad)]) for k, v in hp.items()}

    t0 = time.perf_counter()
    example = (root, ids_p[:chunk], {k: v[:chunk] for k, v in hp_p.items()}, args)
    compiled = _compile(fn, example)
    compile_seconds = time.perf_counter() - t0

    outs = []
    t0 = time.perf_counter()
    for c in range(n_chunks):
        sl = slice(c * chunk, (c + 1) * chunk)
        out = compiled(root, ids_p[sl], {k: v[sl] for k, v in hp_p.items()}, args)
        outs.append(jax.device_get(out))
        if progress is not None:
            progress(min((c + 1) * chunk, num))
    run_seconds = time.perf_counter() - t0

    overflow = np.concatenate([o[0] for o in outs])[:num]
    metrics = {k: np.concatenate([o[1][k] for o in outs])[:num] for k in outs[0][1]}
    return SweepResult(metrics, overflow, compile_seconds, run_seconds, chunk)
