"""The generative-model contract, real-data sources, and their registries.

A model family is a factory ``StaticConfig -> GenerativeModel``: a NamedTuple of four pure
functions (optax style). Static sizes are bound in the factory, never traced; hyperparameters are
float32 scalars passed to every call, so a vmapped sweep over them compiles once.

- ``init(key, real, hparams) -> params``: parameters before generation 0 (a pytree with fixed
  shapes and dtypes, the same as ``fit`` returns).
- ``fit(key, pool, params, hparams) -> params``: fit on the valid part of ``pool``, a
  fixed-length computation; ``params`` are the previous generation's (for warm starts).
- ``sample(key, params, real, hparams, num) -> data``: ``num`` (static) examples; ``real`` gives
  access to fixed parts of the setting (e.g. the design matrix of linear regression).
- ``evaluate(params, real, hparams) -> metrics``: a dict of float32 scalars on held-out real data
  (``real.test``) and, where known, the true distribution (``real.truth``).
- ``collapsed(params, real, hparams) -> bool`` (optional): the family's own degeneracy test (e.g.
  a Gaussian whose covariance trace fell below a floor); ``chain.py`` records it per generation as
  the ``collapsed`` flag (False when a family does not define it).

A ``Source`` makes the real data of one chain: ``draw(key, hparams, args) -> RealData`` runs
inside ``jit`` (vmapped over chains); ``args`` is a host pytree loaded once (``load(static)``),
passed as an argument and never closed over.

A model may also bring its own ``regime`` (optional): an exact fast path that keeps a summary of
the pool (e.g. the Gaussian's sufficient statistics) instead of the examples. Its ``sample`` then
returns what that regime stores, and the chain uses it in place of the generic regime of the same
name (``chain.make_chain``).

Register a family with ``register_model``; it then appears in ``collapse-jax list`` and is
picked up by the contract tests in ``tests/test_contract.py`` with no change to them. Its
``ModelSpec`` also declares the allowed range of every hyperparameter, whether the family computes
in float64 (``Experiment.x64``), and how many samples a run keeps for pictures (``snapshot``) with
the family's own renderer of them (``render``, e.g. a grid of images or a text file).

>>> from collapse_jax import MODELS, SOURCES
>>> sorted(MODELS)[:4]
['categorical', 'conformer_diffusion', 'gaussian', 'gmm']
>>> MODELS["gaussian"].source, MODELS["gaussian"].metrics[:2]
('gaussian', ('trace_ratio', 'logdet_ratio'))
>>> sorted(SOURCES)[:3]
['categorical', 'circles', 'conformers']
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from collapse_jax.config import ConfigError, HparamRange, StaticConfig, as_range
from collapse_jax.pool import Pool
from collapse_jax.regimes import Regime
from collapse_jax.types import Data, Hparams, Metrics, Params, PRNGKey, PyTree, RealData


class GenerativeModel(NamedTuple):
    """The four pure functions every model family provides (see module docstring).

    ``collapsed`` and ``regime`` are optional: the family's degeneracy test, and a model-specific
    pool (exact fast path) replacing the generic regime. ``sample`` returns a pytree with leaves
    ``[num, ...]`` (the shapes of ``real.train``'s leaves past the first axis).

    >>> import jax
    >>> from collapse_jax import StaticConfig, hparams_from, make_model, make_source
    >>> static = StaticConfig("linear_regression", "replace", n0=12, n=12, d=3, generations=2,
    ...                       options={"fast_path": False})
    >>> model, h = make_model(static), hparams_from({"sigma": 10.0, "noise_ratio": 1.0})
    >>> def draw_init_sample(key):
    ...     k_real, k_init, k_sample = jax.random.split(key, 3)
    ...     real = make_source(static).draw(k_real, h, {})
    ...     return model.sample(k_sample, model.init(k_init, real, h), real, h, static.n)
    >>> jax.tree.map(lambda x: x.shape, jax.eval_shape(draw_init_sample, jax.random.key(0)))
    {'x': (12, 3), 'y': (12,)}
    """

    init: Callable[[PRNGKey, RealData, Hparams], Params]
    fit: Callable[[PRNGKey, Pool, Params, Hparams], Params]
    sample: Callable[[PRNGKey, Params, RealData, Hparams, int], Data]
    evaluate: Callable[[Params, RealData, Hparams], Metrics]
    collapsed: Callable[[Params, RealData, Hparams], Any] | None = None
    regime: Regime | None = None


class Source(NamedTuple):
    """Real data for a chain.

    Attributes:
        load: ``(static) -> args``, host pytree loaded once (``{}`` for generated data).
        draw: ``(key, hparams, args) -> RealData`` for one chain; pure, vmappable.
        fresh: optional ``(key, hparams, args, real, num) -> data``: ``num`` (static) new real
            examples from the same distribution as ``real.train``, for regimes that mix fresh
            real data into every generation (``fresh_real_mix``). None when the source cannot
            draw more real data.

    >>> import jax
    >>> from collapse_jax import StaticConfig, hparams_from, make_source
    >>> static = StaticConfig("kde", "replace", n0=16, n=16, d=2, generations=2, n_test=8)
    >>> source = make_source(static)  # the family's default: two moons
    >>> args = source.load(static)
    >>> real = jax.eval_shape(lambda k: source.draw(k, hparams_from({"noise": 0.05}), args),
    ...                       jax.random.key(0))
    >>> real.train.shape, real.test.shape, real.train.dtype, source.fresh is not None
    ((16, 2), (8, 2), dtype('float32'), True)
    """

    load: Callable[[StaticConfig], PyTree]
    draw: Callable[[PRNGKey, Hparams, PyTree], RealData]
    fresh: Callable[[PRNGKey, Hparams, PyTree, RealData, int], Data] | None = None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Registry entry of a model family.

    Attributes:
        name: registry name.
        factory: ``StaticConfig -> GenerativeModel``.
        source: default source name.
        hparams: default hyperparameter values (all vmappable float32 scalars).
        options: static options, each with its allowed values (the first is the default).
        metrics: metric names ``evaluate`` returns, in display order.
        check: optional ``StaticConfig -> None`` raising ``ConfigError`` on impossible sizes.
        ranges: allowed values of hyperparameters, name -> ``(lo, hi)`` (closed) or a
            ``config.HparamRange``; ``validate`` checks every configured value against them.
        doc: one line for ``collapse-jax list``.
        example: small sizes (``n0``, ``n``, ``d``, ``n_test``, ``options``...) the registry
            contract tests run the family with; keep them tiny (CPU CI).
        example_regimes: the regimes the contract tests run the family under (None: every
            regime), for a family whose every compile is costly: its compiled sweep runs under
            the first of them in CI and the others with ``pytest -m slow``.
        float64: the family computes in ``StaticConfig.dtype`` throughout, so ``x64=True`` runs
            are meaningful (others are float32 only).
        snapshot: samples a run keeps of the first chain of every group at a few generations
            (``Experiment.snapshots`` overrides; 0 = none).
        render: ``(samples, static, out_dir) -> [paths]``: the family's picture or text of those
            samples (``samples``: regime -> generation -> ``sample`` output as numpy), called
            after the run with the static config of the regime's first group.
        describe: one line per hyperparameter and option saying what it means
            (``collapse-jax families`` prints them with the defaults and allowed values).
    """

    name: str
    factory: Callable[[StaticConfig], GenerativeModel]
    source: str
    hparams: Mapping[str, float]
    options: Mapping[str, tuple[Any, ...]]
    metrics: tuple[str, ...]
    check: Callable[[StaticConfig], None] | None = None
    doc: str = ""
    example: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    ranges: Mapping[str, HparamRange] = dataclasses.field(default_factory=dict)
    float64: bool = False
    snapshot: int = 0
    render: Callable[..., list] | None = None
    describe: Mapping[str, str] = dataclasses.field(default_factory=dict)
    example_regimes: tuple[str, ...] | None = None


#: name -> ``ModelSpec`` of every registered model family (``register_model`` fills it; importing
#: ``collapse_jax`` registers the built-in ones; ``collapse-jax list`` prints it).
MODELS: dict[str, ModelSpec] = {}
#: name -> source factory ``StaticConfig -> Source`` (``register_source`` fills it).
SOURCES: dict[str, Callable[[StaticConfig], Source]] = {}


def register_model(
    name: str,
    *,
    source: str,
    hparams: Mapping[str, float],
    metrics: tuple[str, ...],
    options: Mapping[str, tuple[Any, ...]] | None = None,
    check: Callable[[StaticConfig], None] | None = None,
    doc: str = "",
    example: Mapping[str, Any] | None = None,
    ranges: Mapping[str, Any] | None = None,
    float64: bool = False,
    snapshot: int = 0,
    render: Callable[..., list] | None = None,
    describe: Mapping[str, str] | None = None,
    example_regimes: tuple[str, ...] | None = None,
) -> Callable:
    """Decorator registering a model factory under ``name`` (fields: see ``ModelSpec``); the
    family then runs in experiments, sweeps and the CLI (``examples/custom_model.py``: a whole one).

    >>> import jax, jax.numpy as jnp
    >>> from collapse_jax import (GenerativeModel, StaticConfig, hparams_from, make_chain,
    ...                           register_model, run_chain)
    >>> @register_model("doc_mean", source="gaussian", hparams={"sigma": 1.0}, metrics=("err",))
    ... def doc_mean(static):  # a Gaussian with known covariance: fit the mean only
    ...     def fit(key, pool, params, h):
    ...         w = pool.weights[:, None]
    ...         return {"mean": jnp.sum(w * pool.data, 0) / jnp.sum(w)}
    ...     def sample(key, params, real, h, num):
    ...         return params["mean"][None, :] + jax.random.normal(key, (num, static.d))
    ...     return GenerativeModel(
    ...         init=lambda key, real, h: {"mean": jnp.zeros(static.d)}, fit=fit, sample=sample,
    ...         evaluate=lambda p, real, h: {"err": jnp.sum((p["mean"] - real.truth["mean"]) ** 2)})
    >>> chain = make_chain(StaticConfig("doc_mean", "replace", n0=8, n=8, d=2, generations=3))
    >>> run = lambda k: run_chain(chain, k, hparams_from({"sigma": 1.0, "scale": 1.0}), {})
    >>> jax.eval_shape(run, jax.random.key(0))[1]["err"]  # one value per generation
    ShapeDtypeStruct(shape=(3,), dtype=float32)
    >>> del MODELS["doc_mean"]
    """

    def deco(factory: Callable[[StaticConfig], GenerativeModel]):
        MODELS[name] = ModelSpec(
            name, factory, source, dict(hparams), dict(options or {}), metrics, check, doc,
            dict(example or {"n0": 16, "n": 16, "d": 2, "n_test": 16}),
            {k: as_range(r) for k, r in (ranges or {}).items()}, float64, snapshot, render,
            dict(describe or {}), example_regimes,
        )
        return factory

    return deco


def lazy_factory(module: str, name: str) -> Callable[[StaticConfig], GenerativeModel]:
    """A model factory that imports ``module`` when it is first called and calls its ``name``.

    A family whose chain needs a heavy library registers with it (its options, checks and docs)
    without importing that library: the neural families' chains live in ``*_chain`` modules, so
    ``import collapse_jax`` loads neither flax nor optax (about 0.5 s of every command's start).

    >>> make = lazy_factory("collapse_jax.models.vae_chain", "make_vae")
    >>> make.__module__, make.__name__
    ('collapse_jax.models.vae_chain', 'make_vae')
    """

    def factory(static: StaticConfig) -> GenerativeModel:
        return getattr(importlib.import_module(module), name)(static)

    factory.__module__, factory.__name__, factory.__qualname__ = module, name, name
    return factory


def register_source(name: str) -> Callable:
    """Decorator registering a source factory ``StaticConfig -> Source`` under ``name``; a config
    picks it with ``source=`` (``StaticConfig.source``, ``Experiment.source``).

    >>> import jax
    >>> from collapse_jax import RealData, Source, StaticConfig, make_source, register_source
    >>> @register_source("doc_uniform")
    ... def doc_uniform(static):
    ...     def draw(key, hparams, args):
    ...         k1, k2 = jax.random.split(key)
    ...         return RealData(jax.random.uniform(k1, (static.n0, static.d)),
    ...                         jax.random.uniform(k2, (static.n_test, static.d)), {})
    ...     return Source(load=lambda static: {}, draw=draw)
    >>> static = StaticConfig("kde", "replace", n0=5, n=5, d=2, generations=2, n_test=3,
    ...                       source="doc_uniform")
    >>> make_source(static).draw(jax.random.key(0), {}, {}).train.shape
    (5, 2)
    >>> del SOURCES["doc_uniform"]
    """

    def deco(factory: Callable[[StaticConfig], Source]):
        SOURCES[name] = factory
        return factory

    return deco


def get_model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            f"model={name!r}: unknown; allowed: {', '.join(sorted(MODELS))}"
        ) from None


def make_model(static: StaticConfig) -> GenerativeModel:
    """The model a StaticConfig names (its ``GenerativeModel``, sizes bound; nothing traced).

    >>> from collapse_jax import StaticConfig, make_model
    >>> model = make_model(StaticConfig("gaussian", "replace", n0=8, n=8, d=2, generations=2))
    >>> model._fields[:4]
    ('init', 'fit', 'sample', 'evaluate')
    >>> model.regime.name, model.regime.capacity  # the exact fast path: one slot of statistics
    ('replace', 1)
    """
    return get_model_spec(static.model).factory(static)


def make_source(static: StaticConfig) -> Source:
    """The source a StaticConfig names (its model's default when ``static.source`` is empty).

    >>> from collapse_jax import StaticConfig, make_source
    >>> make_source(StaticConfig("gaussian", "replace", 4, 4, 2, 2, source="nope"))
    Traceback (most recent call last):
    ...
    collapse_jax.config.ConfigError: source='nope': unknown; allowed: categorical, circles, ...
    """
    name = static.source or get_model_spec(static.model).source
    if name not in SOURCES:
        raise ConfigError(f"source={name!r}: unknown; allowed: {', '.join(sorted(SOURCES))}")
    source = SOURCES[name](static)
    if static.regime == "fresh_real_mix" and source.fresh is None:
        fresh = sorted(k for k, f in SOURCES.items() if _has_fresh(f, static))
        raise ConfigError(
            f"regime='fresh_real_mix' with source={name!r}: the source cannot draw fresh real "
            f"data (Source.fresh is None); sources that can: {', '.join(fresh) or '(none)'}"
        )
    return source


def _has_fresh(factory: Callable[[StaticConfig], Source], static: StaticConfig) -> bool:
    try:
        return factory(static).fresh is not None
    except Exception:  # noqa: BLE001 - a source that cannot even build for this config
        return False
