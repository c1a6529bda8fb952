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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from collapse_jax.config import ConfigError, HparamRange, StaticConfig, as_range
from collapse_jax.pool import Pool
from collapse_jax.regimes import Regime
from collapse_jax.types import Data, Hparams, Metrics, Params, PRNGKey, PyTree, RealData


class GenerativeModel(NamedTuple):
    """The four pure functions every model family provides (see module docstring).

    ``collapsed`` and ``regime`` are optional: the family's degeneracy test, and a model-specific
    pool (exact fast path) replacing the generic regime.
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
            regime), for a family whose every compile is costly.
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


MODELS: dict[str, ModelSpec] = {}
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
    """Decorator registering a model factory under ``name`` (fields: see ``ModelSpec``)."""

    def deco(factory: Callable[[StaticConfig], GenerativeModel]):
        MODELS[name] = ModelSpec(
            name, factory, source, dict(hparams), dict(options or {}), metrics, check, doc,
            dict(example or {"n0": 16, "n": 16, "d": 2, "n_test": 16}),
            {k: as_range(r) for k, r in (ranges or {}).items()}, float64, snapshot, render,
            dict(describe or {}), example_regimes,
        )
        return factory

    return deco


def register_source(name: str) -> Callable:
    """Decorator registering a source factory ``StaticConfig -> Source`` under ``name``."""

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
    """The model a StaticConfig names."""
    return get_model_spec(static.model).factory(static)


def make_source(static: StaticConfig) -> Source:
    """The source a StaticConfig names (its model's default when ``static.source`` is empty)."""
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
