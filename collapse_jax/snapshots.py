"""Samples of a few generations, for figures: chains run one generation per call.

``run_chain`` keeps its scan outputs small (scalar metrics only). To look at what a chain
generates, ``run_with_snapshots`` runs the same chains generation by generation (``chain.init``
then ``chain.step``, each compiled once and vmapped over chains) and, at the requested
generations only, draws ``num`` samples from the fitted model. Keys are derived as everywhere:
the chain's generations use exactly the keys of ``run_chain`` (so metrics agree with a sweep up to
float reassociation), and the snapshot samples use ``fold_in(fold_in(chain_key, SNAPSHOT_STREAM),
g)``, a stream no generation touches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from collapse_jax import chain as C
from collapse_jax.config import ConfigError, StaticConfig
from collapse_jax.types import Hparams, PyTree

#: ``fold_in`` data of the snapshot-sample stream of a chain (below ``chain.REAL_STREAM``).
SNAPSHOT_STREAM = 2**31 - 2


class Snapshots(NamedTuple):
    """Host outputs of ``run_with_snapshots``.

    Attributes:
        metrics: name -> ``[chains, generations]`` numpy array (as a sweep returns).
        generations: the snapshot generations, sorted.
        samples: ``[chains, len(generations), num, ...]`` numpy array of model samples.
    """

    metrics: dict[str, np.ndarray]
    generations: tuple[int, ...]
    samples: np.ndarray


def run_with_snapshots(
    static: StaticConfig,
    root: jax.Array,
    chain_ids: Sequence[int],
    hparams: Hparams,
    args: PyTree,
    at: Sequence[int],
    num: int = 16,
) -> Snapshots:
    """Run chains generation by generation and keep ``num`` samples at generations ``at``.

    Args:
        static: shapes of the chain.
        root: root key; chain i uses ``fold_in(root, chain_ids[i])``.
        chain_ids: ``[C]`` chain ids (seeds).
        hparams: name -> scalar or ``[C]`` float32 values.
        args: the source's host data.
        at: generations (0 .. generations - 1) whose fitted model is sampled.
        num: samples per snapshot (static).
    """
    gens = tuple(sorted(set(int(g) for g in at)))
    if not gens or gens[0] < 0 or gens[-1] >= static.generations:
        raise ConfigError(
            f"snapshot generations {list(at)}: must lie in 0 .. {static.generations - 1}"
        )
    chain = C.make_chain(static)
    ids = np.asarray(chain_ids, np.int32)
    hp = {k: np.broadcast_to(np.asarray(v, np.float32), ids.shape) for k, v in hparams.items()}

    def snap(chain_key, params, real, hp1, g):
        key = jax.random.fold_in(jax.random.fold_in(chain_key, SNAPSHOT_STREAM), g)
        return chain.model.sample(key, params, real, hp1, num)

    def first(root, cid, hp1, args):
        ck = jax.random.fold_in(root, cid)
        real = C.draw_real(chain, ck, hp1, args)
        state, m = C.init(chain, ck, hp1, real)
        return state, m, snap(ck, state.params, real, hp1, jnp.int32(0))

    def nxt(root, cid, hp1, args, state, g):
        ck = jax.random.fold_in(root, cid)
        real = C.draw_real(chain, ck, hp1, args)
        state, m = C.step(chain, state, g, ck, hp1, real)
        return state, m, snap(ck, state.params, real, hp1, g)

    first_fn = jax.jit(jax.vmap(first, in_axes=(None, 0, 0, None)))
    next_fn = jax.jit(jax.vmap(nxt, in_axes=(None, 0, 0, None, 0, None)))
    state, m, s = first_fn(root, ids, hp, args)
    metrics, samples = [jax.device_get(m)], {0: s}
    for g in range(1, static.generations):
        state, m, s = next_fn(root, ids, hp, args, state, jnp.int32(g))
        metrics.append(jax.device_get(m))
        if g in gens:
            samples[g] = s
    out = {k: np.stack([np.asarray(mg[k]) for mg in metrics], axis=1) for k in metrics[0]}
    stacked = np.stack([np.asarray(samples[g]) for g in gens], axis=1)
    return Snapshots(out, gens, stacked)
