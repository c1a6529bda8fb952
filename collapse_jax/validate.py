"""Checking an experiment against the registries (``validate``: host checks before anything is
traced, each error one line naming the field, the value and what is allowed), and resolving it
once into a ``RunSpec`` (``resolve``: static groups, chain ids, hyperparameters, swept fields,
fingerprint), which every later layer takes."""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from collapse_jax.config import (
    COMPILE_MODES,
    NOT_RESULT_FIELDS,
    ConfigError,
    Experiment,
    HparamRange,
    StaticConfig,
    as_tuple,
)
from collapse_jax.model import MODELS, SOURCES, ModelSpec, get_model_spec, make_source
from collapse_jax.regimes import REGIME_HPARAMS, REGIME_RANGES, REGIMES, regime_hparams
from collapse_jax.types import PyTree

#: Largest pool capacity: slots are indexed with int32.
MAX_CAPACITY = 2**31 - 1
_FLOAT32_MAX = 3.4028234663852886e38
_FLOAT32_TINY = 1.1754943508222875e-38


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def known_hparams(exp: Experiment) -> dict[str, float]:
    """Default values of every hyperparameter ``exp`` may set: its model's and its regimes'."""
    spec = MODELS.get(exp.model) if isinstance(exp.model, str) else None
    out = dict(spec.hparams) if spec is not None else {}
    regimes = [r for r in exp.regimes if isinstance(r, str)] if isinstance(exp.regimes, tuple) \
        else []
    out.update(regime_hparams(regimes))
    return out


def known_options(exp: Experiment) -> dict[str, tuple]:
    """Allowed values of every static option of ``exp``'s model ({} if unknown)."""
    spec = MODELS.get(exp.model) if isinstance(exp.model, str) else None
    return dict(spec.options) if spec is not None else {}


def hparam_range(model: str, name: str) -> HparamRange | None:
    """The allowed range of ``name``: the model's declaration, else the regimes'."""
    spec = MODELS.get(model)
    if spec is not None and name in spec.ranges:
        return spec.ranges[name]
    return REGIME_RANGES.get(name)


def experiment_hparam_range(exp: Experiment, name: str) -> HparamRange | None:
    """``hparam_range`` narrowed by the experiment's static bounds (``lam`` in ``[0, lam_max]``)."""
    if name == "lam":
        return HparamRange(0.0, float(exp.lam_max))
    return hparam_range(exp.model, name)


def statics(exp: Experiment) -> list[StaticConfig]:
    """One StaticConfig per (regime, n, n0, d) combination, in a stable order, with the model's
    default options filled in and the source named (the model's default when unset)."""
    spec = MODELS.get(exp.model)
    defaults = {k: v[0] for k, v in spec.options.items()} if spec is not None else {}
    options = tuple(sorted({**defaults, **exp.options}.items()))
    source = exp.source or (spec.source if spec is not None else "")
    return [
        StaticConfig(model=exp.model, regime=regime, n0=n0, n=n, d=d,
                     generations=exp.generations, n_test=exp.n_test, source=source,
                     data_path=exp.data_path, subsample=exp.subsample, options=options,
                     dtype="float64" if exp.x64 else "float32", lam_max=float(exp.lam_max),
                     window=exp.window, window_keep_real=exp.window_keep_real,
                     metrics=exp.metrics)
        for regime in exp.regimes for n, n0, d in exp.static_values()
    ]


# ----------------------------------------------------------------------------------------------
# Field checks


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_int(
    field: str, value: Any, lo: int = 1, allow_tuple: bool = False, hi: int | None = None
) -> None:
    if allow_tuple and isinstance(value, tuple) and not value:
        raise ConfigError(f"{field}=(): an empty sweep; give at least one value")
    values = value if (allow_tuple and isinstance(value, tuple)) else (value,)
    for v in values:
        if not _is_int(v):
            kind = "an integer or a tuple of integers" if allow_tuple else "an integer"
            hint = " (a sweep is a tuple, e.g. (10, 32))" if isinstance(v, list) else ""
            raise ConfigError(f"{field}={v!r}: must be {kind} >= {lo}{hint}")
        if v < lo:
            raise ConfigError(f"{field}={v}: must be >= {lo}")
        if hi is not None and v > hi:
            raise ConfigError(f"{field}={v}: must be <= {hi}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{field}={value!r}: repeated values in a sweep; list each once")


def _check_str(field: str, value: Any, nonempty: bool = False) -> None:
    if not isinstance(value, str) or (nonempty and not value):
        kind = "a non-empty string" if nonempty else "a string"
        raise ConfigError(f"{field}={value!r}: must be {kind}")


def _check_bool(field: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{field}={value!r}: must be True or False")


def _check_mapping(field: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{field}={value!r}: must be a dict of name -> value")
    for k in value:
        if not isinstance(k, str):
            raise ConfigError(f"{field}: key {k!r} must be a string")


def _check_name(field: str, value: Any, allowed: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{field}={value!r}: unknown{did_you_mean(str(value), allowed)}; "
                          f"allowed: {', '.join(allowed)}")


def _check_hparam(field: str, x: Any, rng: HparamRange | None, x64: bool) -> None:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise ConfigError(f"{field}={x!r}: must be a number or a tuple of numbers")
    if not math.isfinite(x):
        raise ConfigError(f"{field}={x!r}: must be finite")
    if rng is not None and not rng.contains(x):
        raise ConfigError(f"{field}={x!r}: must lie in {rng}")
    if not x64 and abs(x) > _FLOAT32_MAX:
        raise ConfigError(f"{field}={x!r}: overflows float32 (max 3.4e+38); set x64=True")
    if not x64 and 0 < abs(x) < _FLOAT32_TINY:
        raise ConfigError(f"{field}={x!r}: underflows float32 (smallest normal 1.2e-38); "
                          f"use 0, a larger value, or x64=True")


def _check_hparams(exp: Experiment) -> None:
    _check_mapping("hparams", exp.hparams)
    allowed = known_hparams(exp)
    for k, v in exp.hparams.items():
        if k not in allowed:
            raise ConfigError(
                f"hparams.{k}: not a hyperparameter of model {exp.model!r} or of its regimes"
                f"{did_you_mean(k, list(allowed))}; allowed: "
                f"{', '.join(sorted(allowed)) or '(none)'}")
        if isinstance(v, tuple) and not v:
            raise ConfigError(f"hparams.{k}=(): an empty sweep; give at least one value")
        for x in as_tuple(v):
            if k == "lam" and isinstance(x, int | float) and not 0 <= x <= exp.lam_max:
                raise ConfigError(
                    f"hparams.lam={x}: must lie in [0, lam_max={exp.lam_max}] (lam_max is static: "
                    f"it fixes the ceil(lam_max * n0) examples sampled per generation)")
            _check_hparam(f"hparams.{k}", x, hparam_range(exp.model, k), exp.x64)
        if isinstance(v, tuple) and len(set(v)) != len(v):
            raise ConfigError(f"hparams.{k}={v!r}: repeated values in a sweep; list each once")


def _check_model_fields(exp: Experiment, spec: ModelSpec) -> None:
    """Metrics, options and x64 against the model's declarations."""
    if exp.x64 and not spec.float64:
        supported = sorted(name for name, s in MODELS.items() if s.float64)
        raise ConfigError(f"x64=True: model {exp.model!r} computes in float32 only; float64 runs "
                          f"are supported for {', '.join(supported) or '(none)'}")
    if not isinstance(exp.metrics, tuple) or not all(isinstance(m, str) for m in exp.metrics):
        raise ConfigError(f"metrics={exp.metrics!r}: must be a tuple of metric names "
                          f"(empty = all); allowed: {', '.join(spec.metrics)}")
    for m in exp.metrics:
        if m not in spec.metrics:
            raise ConfigError(f"metrics: {m!r} is not a metric of model {exp.model!r}"
                              f"{did_you_mean(m, list(spec.metrics))}; allowed: "
                              f"{', '.join(spec.metrics)}")
    if len(set(exp.metrics)) != len(exp.metrics):
        raise ConfigError(f"metrics={exp.metrics!r}: repeated metric; list each once")
    _check_mapping("options", exp.options)
    for k, v in exp.options.items():
        if k not in spec.options:
            raise ConfigError(f"options.{k}: not an option of model {exp.model!r}"
                              f"{did_you_mean(k, list(spec.options))}; allowed: "
                              f"{', '.join(sorted(spec.options)) or '(none)'}")
        if not any(v == a and type(v) is type(a) for a in spec.options[k]):
            raise ConfigError(f"options.{k}={v!r}: allowed values are {list(spec.options[k])}")


def validate(exp: Experiment) -> Experiment:
    """Check an experiment on the host; raise ``ConfigError`` naming the first bad field.

    Every message is one line: the field, the value and what is allowed. Nothing is traced or
    compiled. Returns the experiment unchanged so calls chain. Model-specific checks (e.g.
    n > d) are delegated to the model's ``check`` hook for every static combination.

    >>> validate(Experiment(name="x", model="gaussian", seeds="ten"))
    Traceback (most recent call last):
    ...
    collapse_jax.config.ConfigError: seeds='ten': must be an integer >= 1
    """
    if not isinstance(exp, Experiment):
        raise ConfigError(f"config: expected an Experiment, got {type(exp).__name__}")
    _check_str("name", exp.name, nonempty=True)
    _check_name("model", exp.model, sorted(MODELS))
    spec = MODELS[exp.model]
    if isinstance(exp.regimes, str):
        raise ConfigError(
            f"regimes={exp.regimes!r}: must be a tuple of regime names, e.g. ({exp.regimes!r},)")
    if not isinstance(exp.regimes, tuple) or not exp.regimes:
        raise ConfigError(f"regimes={exp.regimes!r}: must be a non-empty tuple of regime names")
    for r in exp.regimes:
        _check_name("regime", r, list(REGIMES))
    if len(set(exp.regimes)) != len(exp.regimes):
        raise ConfigError(f"regimes={exp.regimes!r}: repeated regime; list each once")
    _check_int("seeds", exp.seeds, hi=MAX_CAPACITY)
    _check_int("generations", exp.generations, hi=2**30)
    _check_int("n", exp.n, allow_tuple=True)
    if exp.n0 is not None:
        _check_int("n0", exp.n0, allow_tuple=True)
    _check_int("d", exp.d, allow_tuple=True)
    _check_int("n_test", exp.n_test)
    _check_int("root_seed", exp.root_seed, lo=0, hi=2**63 - 1)
    for field in ("subsample", "chunk_size", "generation_chunk"):
        if getattr(exp, field) is not None:
            _check_int(field, getattr(exp, field))
    if exp.snapshots is not None:
        _check_int("snapshots", exp.snapshots, lo=0)
    for field in ("source", "data_path", "description"):
        _check_str(field, getattr(exp, field))
    _check_name("compile", exp.compile, list(COMPILE_MODES))
    _check_bool("x64", exp.x64)
    _check_int("keep_checkpoints", exp.keep_checkpoints)
    cs = exp.checkpoint_seconds
    if isinstance(cs, bool) or not isinstance(cs, int | float) or not cs >= 0:
        raise ConfigError(f"checkpoint_seconds={cs!r}: must be a number >= 0")
    if exp.source:
        _check_name("source", exp.source, sorted(SOURCES))
    if isinstance(exp.lam_max, bool) or not isinstance(exp.lam_max, numbers.Real) or not (
            0 < exp.lam_max < math.inf):
        raise ConfigError(f"lam_max={exp.lam_max!r}: must be a finite number > 0")
    _check_int("window", exp.window)
    _check_bool("window_keep_real", exp.window_keep_real)
    _check_hparams(exp)
    _check_model_fields(exp, spec)
    if exp.subsample is not None and "accumulate_subsample" not in exp.regimes:
        raise ConfigError(
            f"subsample={exp.subsample}: only the accumulate_subsample regime uses it, and "
            f"regimes={exp.regimes!r} does not include it; drop subsample or add that regime")
    for static in statics(exp):
        _check_static(static)
        if spec.check is not None:
            spec.check(static)
        if static.regime == "fresh_real_mix":
            make_source(static)  # raises when the source cannot draw fresh real data
    return exp


def _check_static(static: StaticConfig) -> None:
    """Impossible size combinations of one StaticConfig (the regime's own checks included)."""
    sizes = f"n0={static.n0}, n={static.n}, generations={static.generations}"
    if static.subsample is not None and static.regime == "accumulate_subsample":
        cap = static.n0 + (static.generations - 1) * static.n
        if static.subsample > cap:
            raise ConfigError(f"subsample={static.subsample}: larger than the accumulated pool "
                              f"(capacity {cap} for {sizes}); use subsample <= {cap}")
    try:
        regime = REGIMES[static.regime](static)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"regime={static.regime!r} with {sizes}: {e}") from None
    if regime.capacity > MAX_CAPACITY:
        raise ConfigError(
            f"regime={static.regime!r} with {sizes}: pool capacity {regime.capacity} exceeds "
            f"{MAX_CAPACITY} (int32 slot indices); use fewer generations or a smaller n")


def load_args(static: StaticConfig) -> PyTree:
    """``Source.load(static)``; a missing or malformed data file is a one-line ``ConfigError``."""
    try:
        return make_source(static).load(static)
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError, EOFError) as e:
        text = " ".join(str(e).split())
        raise ConfigError(f"source={static.source!r}: cannot load its data: "
                          f"{type(e).__name__}: {text}") from e


# ----------------------------------------------------------------------------------------------
# The resolved run


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything a run derives from its experiment, computed once by ``resolve``.

    Attributes:
        experiment: the validated experiment.
        spec: its model family's registry entry.
        statics: one StaticConfig per compiled group, in run order.
        labels: a short label per group (regime and the swept sizes), for progress and logs.
        args: the source's host data of each group (``Source.load``).
        swept: every swept field with its values (static sizes and hyperparameters).
        chain_ids: ``[C]`` int32, the seed of each chain of a group (seeds tiled over the
            hyperparameter grid: chains with the same seed share their key and real data).
        hparams: name -> ``[C]`` float64, each chain's hyperparameters (model's and regimes').
        fingerprint: the experiment fields that fix the results (a resumed run must match).
        snapshot: samples kept per snapshot (``Experiment.snapshots`` or the family's default).

    >>> spec = resolve(Experiment(name="x", model="gaussian", seeds=3, d=2,
    ...                           hparams={"sigma": (1.0, 2.0)}))
    >>> spec.chains, spec.chain_ids.dtype, spec.hparams["sigma"].shape, len(spec.statics)
    (6, dtype('int32'), (6,), 2)
    """

    experiment: Experiment
    spec: ModelSpec
    statics: tuple[StaticConfig, ...]
    labels: tuple[str, ...]
    args: tuple[PyTree, ...]
    swept: dict[str, tuple]
    chain_ids: np.ndarray
    hparams: dict[str, np.ndarray]
    fingerprint: dict[str, Any]
    snapshot: int

    @property
    def chains(self) -> int:
        """Chains per group."""
        return int(self.chain_ids.shape[0])

    def static_for(self, regime: str, facet: Mapping[str, Any]) -> StaticConfig:
        """The group of ``regime`` whose static sizes match a facet's swept values."""
        for s in self.statics:
            if s.regime == regime and all(getattr(s, k) == v for k, v in facet.items()
                                          if k in ("n", "n0", "d")):
                return s
        raise KeyError(f"no static config for regime={regime} {dict(facet)}")

    def hparams_for(self, facet: Mapping[str, Any]) -> dict[str, float]:
        """The hyperparameters of a facet: defaults, fixed overrides, then the facet's values."""
        exp = self.experiment
        defaults = {**self.spec.hparams, **regime_hparams(exp.regimes)}
        hp = {**defaults, **{k: v for k, v in exp.hparams.items() if not isinstance(v, tuple)}}
        hp.update({k: v for k, v in facet.items() if k in defaults})
        return hp


def fingerprint(exp: Experiment) -> dict[str, Any]:
    """The experiment fields that fix the results (a resumed run must match them)."""
    return {k: v for k, v in exp.to_dict().items() if k not in NOT_RESULT_FIELDS}


def group_label(static: StaticConfig, swept: Mapping[str, tuple]) -> str:
    """``regime`` plus the swept static sizes, e.g. ``"replace n=10"``."""
    return " ".join([static.regime] + [f"{k}={getattr(static, k)}" for k in ("n", "n0", "d")
                                       if k in swept])


def resolve(exp: Experiment) -> RunSpec:
    """Validate ``exp`` and compute its ``RunSpec`` (loading each group's source data, so a bad
    data file fails here, before anything compiles).

    >>> spec = resolve(Experiment(name="x", model="gaussian", seeds=2, n=(8, 16), d=2,
    ...                           hparams={"sigma": (1.0, 2.0)}))
    >>> spec.labels, spec.chain_ids.tolist(), spec.hparams["sigma"].tolist()
    (('replace n=8', 'replace n=16', 'accumulate n=8', 'accumulate n=16'), [0, 1, 0, 1], [1.0, 1.0, 2.0, 2.0])
    """  # noqa: E501
    exp = validate(exp)
    spec = get_model_spec(exp.model)
    swept = exp.swept()
    grid = exp.hparam_grid({**spec.hparams, **regime_hparams(exp.regimes)})
    seeds = np.arange(exp.seeds, dtype=np.int32)
    hparams = {k: np.repeat(np.asarray([g[k] for g in grid], np.float64), exp.seeds)
               for k in grid[0]}
    groups = tuple(statics(exp))
    snapshot = spec.snapshot if exp.snapshots is None else exp.snapshots
    return RunSpec(
        experiment=exp, spec=spec, statics=groups,
        labels=tuple(group_label(s, swept) for s in groups),
        args=tuple(load_args(s) for s in groups), swept=swept,
        chain_ids=np.tile(seeds, len(grid)), hparams=hparams, fingerprint=fingerprint(exp),
        snapshot=int(snapshot))


__all__ = ["REGIME_HPARAMS", "RunSpec", "fingerprint", "known_hparams", "known_options",
           "load_args", "resolve", "statics", "validate"]
