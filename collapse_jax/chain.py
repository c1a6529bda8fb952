"""THE generation loop: generation 0 fit on real data, then sample -> update pool -> refit.

- ``init``: generation 0 (the pool is D0; fit and evaluate);
- ``step``: one generation g >= 1;
- ``advance``: generations ``start .. stop - 1`` in one ``fori_loop`` between traced bounds,
  each generation's metrics written into row ``g - start`` of a buffer of static length, so one
  compiled program serves chunks of any length (a loop of unknown trip count is never unrolled:
  every chunking runs the same loop body, and results do not depend on it);
- ``run_chain``: a whole chain (``init`` then one ``advance``); ``snapshot``: samples of the
  fitted model for pictures. The sweep's compiled programs (``programs.py``) are built from these.

Keys are derived, never carried: ``chain_key = fold_in(root, chain_id)`` (see ``programs.py``),
``gen_key = fold_in(chain_key, g)``, then one split per consumer. The real data of a chain comes
from ``fold_in(chain_key, REAL_STREAM)``, snapshot samples from ``SNAPSHOT_STREAM``. A chain
therefore gives the same numbers whether it runs alone, in a vmapped batch, in chunks of chains
or generations, or resumed from a checkpoint.

References:
    Gerstgrasser et al. 2024, "Is Model Collapse Inevitable?", arXiv:2404.01413.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
from jax._src.interpreters import partial_eval as pe  # dce_jaxpr: no public equivalent

from collapse_jax import rng
from collapse_jax.config import StaticConfig
from collapse_jax.model import GenerativeModel, Source, make_model, make_source
from collapse_jax.pool import Pool
from collapse_jax.regimes import Regime, make_regime
from collapse_jax.types import Array, Data, Hparams, Metrics, Params, PRNGKey, PyTree, RealData

#: ``fold_in`` data of the real-data stream of a chain; generation indices stay below it.
REAL_STREAM = 2**31 - 1
#: ``fold_in`` data of the snapshot-sample stream of a chain (no generation touches it).
SNAPSHOT_STREAM = 2**31 - 2

#: Per-generation flags every chain reports next to its metrics (float32 0/1, like every metric;
#: the results table stores them as bool): ``collapsed`` (the model family's own degeneracy test,
#: ``GenerativeModel.collapsed``) and ``nonfinite`` (some metric or parameter is NaN or inf). A
#: flagged chain keeps running.
FLAGS = ("collapsed", "nonfinite")


class ChainState(NamedTuple):
    """What a chain carries between generations: the pool and the last fitted parameters.

    ``pool`` has leaves ``[capacity, ...]`` (the regime's), ``params`` the family's pytree (here
    the Gaussian's float32 mean ``[d]``, covariance and its root ``[d, d]``, log-determinant
    ``[]``). Shapes only, nothing compiles:

    >>> import jax
    >>> from collapse_jax import StaticConfig, hparams_from, make_chain, draw_real, init
    >>> chain = make_chain(StaticConfig("gaussian", "accumulate", n0=4, n=4, d=2, generations=3,
    ...                                 n_test=4, options={"fast_path": False}))
    >>> h, key = hparams_from({"sigma": 1.0, "scale": 1.0}), jax.random.key(0)
    >>> state, _ = jax.eval_shape(lambda k: init(chain, k, h, draw_real(chain, k, h, {})), key)
    >>> state.pool.data.shape, state.pool.valid.dtype, sorted(state.params)
    ((12, 2), dtype('bool'), ['cov', 'logdet', 'mean', 'root'])
    """

    pool: Pool
    params: Params


class Chain(NamedTuple):
    """A compiled-shape chain: its static config and the model, regime and source it combines.

    >>> import jax
    >>> from collapse_jax import StaticConfig, hparams_from, make_chain
    >>> chain = make_chain(StaticConfig("gaussian", "accumulate", n0=4, n=4, d=2, generations=3,
    ...                                 n_test=4, options={"fast_path": False}))
    >>> h, key = hparams_from({"sigma": 1.0, "scale": 1.0}), jax.random.key(0)
    >>> chain.regime.name, chain.regime.capacity, chain.regime.n_synthetic  # n0 + (G - 1) n
    ('accumulate', 12, 4)
    """

    static: StaticConfig
    model: GenerativeModel
    regime: Regime
    source: Source


def make_chain(static: StaticConfig) -> Chain:
    """Bind the model, regime and source a StaticConfig names.

    A model that brings its own regime (an exact fast path over a summary of the pool, see
    ``GenerativeModel.regime``) uses it in place of the generic one.

    >>> import dataclasses
    >>> from collapse_jax import StaticConfig, make_chain
    >>> static = StaticConfig("gaussian", "accumulate", n0=4, n=4, d=2, generations=3)
    >>> make_chain(static).regime.capacity  # the fast path's pool: one slot of statistics
    1
    >>> generic = dataclasses.replace(static, options={"fast_path": False})
    >>> make_chain(generic).regime.capacity  # the generic pool: n0 + (G - 1) n examples
    12
    """
    model = make_model(static)
    regime = model.regime if model.regime is not None else make_regime(static)
    return Chain(static, model, regime, make_source(static))


def draw_real(chain: Chain, chain_key: PRNGKey, hparams: Hparams, args: PyTree) -> RealData:
    """The real data (train, test, truth) of one chain: a ``RealData`` whose ``train`` leaves are
    ``[n0, ...]`` and ``test`` leaves ``[n_test, ...]`` (float32), the same for every regime.

    >>> import jax
    >>> from collapse_jax import StaticConfig, hparams_from, make_chain, draw_real
    >>> chain = make_chain(StaticConfig("gaussian", "accumulate", n0=4, n=4, d=2, generations=3,
    ...                                 n_test=4, options={"fast_path": False}))
    >>> h, key = hparams_from({"sigma": 1.0, "scale": 1.0}), jax.random.key(0)
    >>> real = jax.jit(lambda k: draw_real(chain, k, h, {}))(key)
    >>> real.train.shape, real.test.dtype, real.truth["mean"].tolist()
    ((4, 2), dtype('float32'), [0.0, 0.0])
    """
    return chain.source.draw(rng.fold_in(chain_key, REAL_STREAM), hparams, args)


def _flags(chain: Chain, params: Params, real: RealData, hparams: Hparams, metrics: Metrics):
    """``collapsed`` from the model's own test; ``nonfinite`` over every float leaf."""
    finite = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves((params, metrics))
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    collapsed = jnp.bool_(False)
    if chain.model.collapsed is not None:
        collapsed = jnp.asarray(chain.model.collapsed(params, real, hparams), jnp.bool_)
    nonfinite = ~jnp.all(jnp.stack(finite))
    return {"collapsed": collapsed.astype(jnp.float32), "nonfinite": nonfinite.astype(jnp.float32)}


def _model_metrics(chain: Chain, params: Params, real: RealData, hparams: Hparams) -> Metrics:
    """The model's metrics; with ``static.metrics`` set, only those, and the computations of the
    others are removed from the trace.

    Dead-code elimination has to happen here, on the jaxpr: XLA does not remove a dead loop (e.g.
    a per-matrix LAPACK ``lax.map`` of ``linalg``) from the body of the generation loop, and JAX
    prunes dead code inside ``scan`` bodies but not inside ``while`` bodies.
    """
    names = chain.static.metrics
    if not names:
        return chain.model.evaluate(params, real, hparams)

    def selected(p, r, h):
        metrics = chain.model.evaluate(p, r, h)
        return [metrics[k] for k in names]

    closed = jax.make_jaxpr(selected)(params, real, hparams)
    jaxpr, _ = pe.dce_jaxpr(closed.jaxpr, [True] * len(names), instantiate=True)
    out = jax_core.jaxpr_as_fun(jax_core.ClosedJaxpr(jaxpr, closed.consts))(
        *jax.tree.leaves((params, real, hparams)))
    return dict(zip(names, out, strict=True))


def _evaluate(chain: Chain, params: Params, real: RealData, hparams: Hparams, view: Pool):
    """The model's metrics (``_model_metrics``), the pool's, and the flags (``FLAGS``) of one
    generation."""
    metrics = {**_model_metrics(chain, params, real, hparams), **chain.regime.metrics(view)}
    return {**metrics, **_flags(chain, params, real, hparams, metrics)}


def init(
    chain: Chain, chain_key: PRNGKey, hparams: Hparams, real: RealData
) -> tuple[ChainState, Metrics]:
    """Generation 0: the pool is D0; fit and evaluate on it.

    Returns the ``ChainState`` and the metrics, a dict of float32 scalars (the model's, the
    pool's and ``FLAGS``).

    >>> import jax
    >>> from collapse_jax import StaticConfig, hparams_from, make_chain, draw_real, init
    >>> chain = make_chain(StaticConfig("gaussian", "accumulate", n0=4, n=4, d=2, generations=3,
    ...                                 n_test=4, options={"fast_path": False}))
    >>> h, key = hparams_from({"sigma": 1.0, "scale": 1.0}), jax.random.key(0)
    >>> state, m = jax.jit(lambda k: init(chain, k, h, draw_real(chain, k, h, {})))(key)
    >>> int(state.pool.count), m["pool_size"].dtype, round(float(m["trace_ratio"]), 3)
    (4, dtype('float32'), 0.881)
    """
    k_init, _, k_view, k_fit = rng.split(rng.fold_in(chain_key, 0), 4)
    pool = chain.regime.init(real.train)
    params = chain.model.init(k_init, real, hparams)
    view = chain.regime.view(pool, k_view, hparams)
    params = chain.model.fit(k_fit, view, params, hparams)
    return ChainState(pool, params), _evaluate(chain, params, real, hparams, view)


def step(
    chain: Chain,
    state: ChainState,
    generation: Array,
    chain_key: PRNGKey,
    hparams: Hparams,
    real: RealData,
    args: PyTree = None,
) -> tuple[ChainState, Metrics]:
    """Generation g >= 1: sample from model g - 1, update the pool by the regime, refit and
    evaluate.

    ``args`` (the source's host data) is needed only by regimes that draw fresh real data.
    ``generation`` is an int32 scalar (traced inside the loop); returns the new ``ChainState``
    and that generation's float32 scalar metrics.

    >>> import jax
    >>> from collapse_jax import StaticConfig, hparams_from, make_chain, draw_real, init, step
    >>> chain = make_chain(StaticConfig("gaussian", "accumulate", n0=4, n=4, d=2, generations=3,
    ...                                 n_test=4, options={"fast_path": False}))
    >>> h, key = hparams_from({"sigma": 1.0, "scale": 1.0}), jax.random.key(0)
    >>> def two(k):
    ...     real = draw_real(chain, k, h, {})
    ...     return step(chain, init(chain, k, h, real)[0], jax.numpy.int32(1), k, h, real)
    >>> state, m = jax.eval_shape(two, key)
    >>> state.pool.data.shape, m["real_fraction"].shape  # the pool keeps its capacity
    ((12, 2), ())
    """
    k_sample, k_update, k_view, k_fit = rng.split(
        rng.fold_in(chain_key, generation), 4
    )
    synthetic = chain.model.sample(
        k_sample, state.params, real, hparams, chain.regime.n_synthetic
    )
    extra = {}
    if chain.regime.n_fresh:  # fresh_real_mix: new real data from the source every generation
        k_update, k_fresh = rng.split(k_update)
        extra["fresh"] = chain.source.fresh(k_fresh, hparams, args, real, chain.regime.n_fresh)
    pool = chain.regime.update(state.pool, synthetic, generation, k_update, hparams, **extra)
    view = chain.regime.view(pool, k_view, hparams)
    params = chain.model.fit(k_fit, view, state.params, hparams)
    return ChainState(pool, params), _evaluate(chain, params, real, hparams, view)


def advance(
    chain: Chain,
    state: ChainState,
    start: Array | int,
    stop: Array | int,
    length: int,
    chain_key: PRNGKey,
    hparams: Hparams,
    real: RealData,
    args: PyTree = None,
) -> tuple[ChainState, Metrics]:
    """Run generations ``start .. stop - 1`` (all >= 1, at most ``length`` of them).

    A ``fori_loop`` between the bounds (traced or not: the sweep passes them unbatched, so under
    ``vmap`` the trip count is the same for every chain) writes each generation's metrics into
    row ``g - start`` of a ``[length]`` buffer; rows past ``stop - start`` stay zero.

    Returns:
        The state after generation ``stop - 1`` and the metrics with a leading ``[length]`` axis.

    >>> import jax
    >>> from collapse_jax import StaticConfig, hparams_from, make_chain, advance, draw_real, init
    >>> chain = make_chain(StaticConfig("gaussian", "accumulate", n0=4, n=4, d=2, generations=3,
    ...                                 n_test=4, options={"fast_path": False}))
    >>> h, key = hparams_from({"sigma": 1.0, "scale": 1.0}), jax.random.key(0)
    >>> def chunk(k):
    ...     real = draw_real(chain, k, h, {})
    ...     return advance(chain, init(chain, k, h, real)[0], 1, 3, 2, k, h, real)
    >>> jax.eval_shape(chunk, key)[1]["trace_ratio"]
    ShapeDtypeStruct(shape=(2,), dtype=float32)
    """
    start = jnp.asarray(start, jnp.int32)

    def body(g, carry):
        s, buf = carry
        s, m = step(chain, s, g, chain_key, hparams, real, args)
        buf = jax.tree.map(
            lambda b, x: jax.lax.dynamic_update_index_in_dim(b, x, g - start, 0), buf, m)
        return s, buf

    _, shapes = jax.eval_shape(lambda s: step(chain, s, start, chain_key, hparams, real, args),
                               state)
    buf = jax.tree.map(lambda x: jnp.zeros((length, *x.shape), x.dtype), shapes)
    return jax.lax.fori_loop(start, jnp.asarray(stop, jnp.int32), body, (state, buf))


def snapshot(chain: Chain, state: ChainState, generation: Array | int, chain_key: PRNGKey,
             hparams: Hparams, real: RealData, num: int) -> Data:
    """``num`` samples of the model fit at ``generation`` (for pictures: the stream
    ``fold_in(fold_in(chain_key, SNAPSHOT_STREAM), generation)``, which no generation uses)."""
    key = rng.fold_in(rng.fold_in(chain_key, SNAPSHOT_STREAM), generation)
    return chain.model.sample(key, state.params, real, hparams, num)


def run_chain(
    chain: Chain, chain_key: PRNGKey, hparams: Hparams, args: PyTree
) -> tuple[ChainState, Metrics]:
    """A whole chain: draw its real data, fit generation 0, then ``generations - 1`` more.

    Returns the final state and metrics with a leading ``[generations]`` axis. Pure: wrap in
    ``jax.jit`` (and ``jax.vmap`` over ``chain_key`` and ``hparams`` for many chains).

    >>> import jax
    >>> from collapse_jax import StaticConfig, make_chain, run_chain, hparams_from
    >>> static = StaticConfig(model="gaussian", regime="replace", n0=20, n=20, d=2, generations=5,
    ...                       n_test=10, options=(("fast_path", False),))
    >>> chain = make_chain(static)
    >>> _, m = jax.jit(lambda k, h: run_chain(chain, k, h, {}))(
    ...     jax.random.key(0), hparams_from({"sigma": 1.0, "scale": 1.0}))
    >>> m["trace_ratio"].shape
    (5,)
    """
    real = draw_real(chain, chain_key, hparams, args)
    state, m0 = init(chain, chain_key, hparams, real)
    rest = chain.static.generations - 1
    state, ms = advance(chain, state, 1, 1 + rest, rest, chain_key, hparams, real, args)
    metrics = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), m0, ms)
    return state, metrics
