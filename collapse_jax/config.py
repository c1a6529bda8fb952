"""Configuration: what fixes shapes (static, one compile each) vs what is vmapped (hyperparameters).

``StaticConfig`` is frozen and hashable: it holds every size that fixes array shapes (pool
capacity, n per generation, number of generations, dimension, model options). ``Hparams`` are
float32 scalars per chain (noise sigma, learning rate, lambda, temperature, ...): changing their
values never recompiles, and a sweep over them is one ``vmap``.

``Experiment`` is what a user writes in ``configs/*.py``: regimes x static sweeps (compiled
separately) x hyperparameter sweeps and seeds (vmapped). Validation happens here, on the host,
before anything is traced, and every error names the field, the value and what is allowed.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import itertools
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp


class ConfigError(ValueError):
    """A bad configuration value; the message names the field and what is allowed."""


@dataclasses.dataclass(frozen=True)
class StaticConfig:
    """Everything that fixes shapes for one compiled chain.

    Attributes:
        model: registered model name.
        regime: registered regime name.
        n0: real training examples (D0).
        n: synthetic examples sampled per generation.
        d: data dimension.
        generations: number of fitted generations; generation g runs over ``0 .. generations-1``.
        n_test: held-out real test examples.
        source: registered real-data source ('' = the model's default).
        data_path: a user data file or directory the source reads ('' = the source's own data),
            e.g. local text files for a language model or user-supplied conformers.
        subsample: fit size of ``accumulate_subsample`` (None = n0).
        options: model options as sorted ``(name, value)`` pairs (static, e.g. ``unbiased``).
        dtype: floating dtype of data, parameters and hyperparameters, ``"float32"`` (default) or
            ``"float64"`` (``Experiment.x64``; needs ``jax_enable_x64``, which ``run_experiment``
            turns on for the run only).
        lam_max: largest ``lam`` of ``fixed_real_mix`` (fixes the ``ceil(lam_max n0)`` examples
            sampled per generation).
        window: number of synthetic generations the ``window`` regime keeps.
        window_keep_real: whether the ``window`` regime keeps D0.
        metrics: the model metrics to compute (empty = all of the model's); the others are left
            out of the compiled program.
    """

    model: str
    regime: str
    n0: int
    n: int
    d: int
    generations: int
    n_test: int = 1000
    source: str = ""
    data_path: str = ""
    subsample: int | None = None
    options: tuple[tuple[str, Any], ...] = ()
    dtype: str = "float32"
    lam_max: float = 1.0
    window: int = 2
    window_keep_real: bool = True
    metrics: tuple[str, ...] = ()

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)


def hparams_from(values: Mapping[str, float], dtype: Any = jnp.float32) -> dict[str, Any]:
    """Hyperparameters as scalars of ``dtype`` (explicit dtype: no weak-type recompiles)."""
    return {k: jnp.asarray(v, dtype) for k, v in sorted(values.items())}


#: Experiment fields that do not change the results: free to differ when a run is resumed or
#: rerun into its own output directory.
NOT_RESULT_FIELDS = ("chunk_size", "generation_chunk", "keep_checkpoints", "checkpoint_seconds",
                     "description")

# Fields of an experiment whose value may be a tuple: a sweep compiled once per value.
STATIC_SWEEPS = ("n", "n0", "d")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One study: every regime x static value x hyperparameter value x seed.

    Attributes:
        name: experiment name (the ``experiment`` column of the results table).
        model: registered model name (``collapse-jax list`` shows them).
        regimes: regime names; each is compiled separately.
        seeds: number of seeds; chain ``seed`` uses key ``fold_in(root, seed)``.
        generations: fitted generations per chain (g = 0 .. generations - 1).
        n: synthetic examples per generation; a tuple sweeps (one compile per value).
        n0: real training examples (None = same as n); a tuple sweeps.
        d: dimension; a tuple sweeps.
        n_test: held-out real examples per chain.
        subsample: fit size for ``accumulate_subsample`` (None = n0).
        source: real-data source ('' = model default).
        data_path: a user data file or directory for the source ('' = the source's own data).
        hparams: hyperparameter overrides (of the model or of the regimes, see
            ``pool.REGIME_HPARAMS``); a tuple of values is a vmapped sweep (no recompile).
        options: static model options (e.g. ``{"unbiased": True}``).
        root_seed: seed of the root key.
        chunk_size: chains per compiled batch over all devices (None = choose from the memory
            estimate; rounded up to a multiple of the device count).
        generation_chunk: generations per compiled call between checkpoints and progress updates
            (None = sized by time: about ``sweep.CHUNK_SECONDS`` of work per call); does not
            change the results.
        keep_checkpoints: checkpoints kept in the output directory (the last k).
        checkpoint_seconds: minimum seconds between two checkpoints (taken at generation-chunk
            boundaries; 0 = at every boundary). When > 0 the interval also grows to 10 times the
            measured duration of the last state save (``checkpoint.CHECKPOINT_SHARE``), so a
            large state costs at most ~10% of the run. A killed run loses at most about one
            interval of work.
        description: free text, copied into ``config.json``.
        x64: run in float64 (``jax_enable_x64`` is enabled for this run only); for the
            closed-form settings, where float32 rounding would blur the comparison.
        lam_max: static bound of ``fixed_real_mix``'s ``lam`` (see StaticConfig).
        window: generations of synthetic data the ``window`` regime keeps.
        window_keep_real: whether ``window`` keeps D0.
        metrics: model metrics to compute and record (empty = every metric of the model); the
            others are not computed at all (e.g. skip the Gaussian's ``w2`` and ``nll``, which
            need an eigendecomposition and the test set, in a speed-critical sweep). The pool
            metrics and the flags are always recorded.
    """

    name: str
    model: str
    regimes: tuple[str, ...] = ("replace", "accumulate")
    seeds: int = 10
    generations: int = 10
    n: int | tuple[int, ...] = 100
    n0: int | tuple[int, ...] | None = None
    d: int | tuple[int, ...] = 1
    n_test: int = 1000
    subsample: int | None = None
    source: str = ""
    data_path: str = ""
    hparams: Mapping[str, float | tuple[float, ...]] = dataclasses.field(default_factory=dict)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    root_seed: int = 0
    chunk_size: int | None = None
    generation_chunk: int | None = None
    keep_checkpoints: int = 3
    checkpoint_seconds: float = 30.0
    description: str = ""
    x64: bool = False
    lam_max: float = 1.0
    window: int = 2
    window_keep_real: bool = True
    metrics: tuple[str, ...] = ()

    # -- derived views -------------------------------------------------------------------------

    def statics(self) -> list[StaticConfig]:
        """One StaticConfig per (regime, n, n0, d) combination, in a stable order."""
        from collapse_jax.model import MODELS

        defaults = {}
        if self.model in MODELS:
            defaults = {k: v[0] for k, v in MODELS[self.model].options.items()}
        options = tuple(sorted({**defaults, **self.options}.items()))
        out = []
        for regime in self.regimes:
            for n, n0, d in itertools.product(
                _as_tuple(self.n), _as_tuple(self.n0), _as_tuple(self.d)
            ):
                out.append(
                    StaticConfig(
                        model=self.model,
                        regime=regime,
                        n0=n if n0 is None else n0,
                        n=n,
                        d=d,
                        generations=self.generations,
                        n_test=self.n_test,
                        source=self.source,
                        data_path=self.data_path,
                        subsample=self.subsample,
                        options=options,
                        dtype="float64" if self.x64 else "float32",
                        lam_max=float(self.lam_max),
                        window=self.window,
                        window_keep_real=self.window_keep_real,
                        metrics=self.metrics,
                    )
                )
        return out

    def swept(self) -> dict[str, tuple]:
        """Every swept field (static or hyperparameter) with its values."""
        out = {k: getattr(self, k) for k in STATIC_SWEEPS if isinstance(getattr(self, k), tuple)}
        out.update({k: v for k, v in self.hparams.items() if isinstance(v, tuple)})
        return out

    def hparam_grid(self, defaults: Mapping[str, float]) -> list[dict[str, float]]:
        """The product of swept hyperparameter values, each merged over ``defaults``."""
        merged = {**defaults, **self.hparams}
        names = sorted(merged)
        values = [_as_tuple(merged[k]) for k in names]
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)
        }

    # -- overrides -----------------------------------------------------------------------------

    def override(self, assignments: Sequence[str]) -> Experiment:
        """Apply ``key=value`` strings (the CLI's ``--set``).

        Values are Python literals (``10``, ``1e-3``, ``True``, ``'a'``) or comma lists
        (``10,32,100``: a sweep). ``regime=replace`` sets the regimes; ``hparams.sigma=3`` (or
        just ``sigma=3`` when unambiguous) sets a hyperparameter; ``options.unbiased=True`` an
        option. Unknown keys raise ``ConfigError`` with a did-you-mean; values are checked by
        ``validate``.

        >>> e = Experiment(name="x", model="gaussian").override(["seeds=4", "n=10,32"])
        >>> e.seeds, e.n
        (4, (10, 32))
        >>> Experiment(name="x", model="gaussian").override(["hparams.sigmaa=2"])
        Traceback (most recent call last):
        ...
        collapse_jax.config.ConfigError: --set hparams.sigmaa=2: unknown key (did you mean 'hparams.sigma'?); known keys: ...
        """  # noqa: E501
        exp = self
        fields = {f.name for f in dataclasses.fields(self)}
        for item in assignments:
            if not isinstance(item, str) or "=" not in item:
                raise ConfigError(f"--set {item!r}: expected key=value (e.g. seeds=10)")
            key, raw = item.split("=", 1)
            key, raw = key.strip(), raw.strip()
            value = parse_value(raw)
            if key == "regime":
                key = "regimes"
            if key in ("regimes", "metrics") and not isinstance(value, tuple):
                value = (value,)
            hp = known_hparams(exp)
            opts = known_options(exp)
            group, _, sub = key.partition(".")
            if group in ("hparams", "options") and sub:
                current = getattr(exp, group)
                if not isinstance(current, Mapping):
                    raise ConfigError(f"{group}={current!r}: must be a dict of name -> value")
                allowed = hp if group == "hparams" else opts
                if _is_model(exp.model) and sub not in allowed:
                    raise _unknown_key(item, key, fields, hp, opts)
                exp = dataclasses.replace(exp, **{group: {**current, sub: value}})
            elif key in fields:
                exp = dataclasses.replace(exp, **{key: value})
            elif key in hp and isinstance(exp.hparams, Mapping):
                exp = dataclasses.replace(exp, hparams={**exp.hparams, key: value})
            elif key in opts and isinstance(exp.options, Mapping):
                exp = dataclasses.replace(exp, options={**exp.options, key: value})
            else:
                raise _unknown_key(item, key, fields, hp, opts)
        return exp


def known_hparams(exp: Experiment) -> dict[str, float]:
    """Default values of every hyperparameter ``exp`` may set: its model's and its regimes'
    (``pool.REGIME_HPARAMS``, where regimes declare theirs)."""
    from collapse_jax import pool
    from collapse_jax.model import MODELS

    spec = MODELS.get(exp.model) if isinstance(exp.model, str) else None
    out = dict(spec.hparams) if spec is not None else {}
    regime_hparams = getattr(pool, "REGIME_HPARAMS", {})
    for r in exp.regimes if isinstance(exp.regimes, tuple) else ():
        if isinstance(r, str):
            out.update(regime_hparams.get(r, {}))
    return out


def known_options(exp: Experiment) -> dict[str, tuple]:
    """Allowed values of every static option of ``exp``'s model ({} if unknown)."""
    from collapse_jax.model import MODELS

    spec = MODELS.get(exp.model) if isinstance(exp.model, str) else None
    return dict(spec.options) if spec is not None else {}


def _unknown_key(item: str, key: str, fields, hp, opts) -> ConfigError:
    known = sorted(fields | {"regime"}) + [f"hparams.{k}" for k in sorted(hp)] + [
        f"options.{k}" for k in sorted(opts)]
    candidates = known + sorted(hp) + sorted(opts)
    return ConfigError(f"--set {item}: unknown key{did_you_mean(key, candidates)}; "
                       f"known keys: {', '.join(known)}")


def parse_value(raw: str) -> Any:
    """Parse a ``--set`` value: a Python literal, a comma list (tuple), or a bare string."""
    raw = raw.strip()
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        if "," in raw:
            return tuple(parse_value(p) for p in raw.split(",") if p.strip())
        return raw
    if isinstance(value, list):
        value = tuple(value)
    return value


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_model(name: str) -> bool:
    from collapse_jax.model import MODELS

    return name in MODELS


def _as_tuple(v: Any) -> tuple:
    return v if isinstance(v, tuple) else (v,)


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    return v


# ----------------------------------------------------------------------------------------------
# Hyperparameter ranges


class HparamRange(NamedTuple):
    """An interval of allowed hyperparameter values, e.g. ``[0, 1]`` or ``(0, inf)``.

    >>> str(POSITIVE), str(UNIT), UNIT.contains(1.0), POSITIVE.contains(0.0)
    ('(0, inf)', '[0, 1]', True, False)
    """

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, x: float) -> bool:
        above = x > self.lo if (self.lo_open or self.lo == -math.inf) else x >= self.lo
        below = x < self.hi if (self.hi_open or self.hi == math.inf) else x <= self.hi
        return bool(above and below)

    def __str__(self) -> str:
        left = "(" if (self.lo_open or self.lo == -math.inf) else "["
        right = ")" if (self.hi_open or self.hi == math.inf) else "]"
        return f"{left}{_fmt(self.lo)}, {_fmt(self.hi)}{right}"


def _fmt(x: float) -> str:
    return "inf" if x == math.inf else "-inf" if x == -math.inf else f"{x:g}"


POSITIVE = HparamRange(0.0, math.inf, lo_open=True)
NONNEGATIVE = HparamRange(0.0, math.inf)
UNIT = HparamRange(0.0, 1.0)

#: Allowed range of hyperparameters by name, for names shared across families (regimes declare
#: theirs here with ``declare_hparam_range``); a model's own ``ranges`` take precedence.
HPARAM_RANGES: dict[str, HparamRange] = {"lam": NONNEGATIVE, "rho": UNIT}


def as_range(r: HparamRange | tuple[float, float]) -> HparamRange:
    """A ``HparamRange`` from a ``(lo, hi)`` pair (closed) or a ``HparamRange``."""
    return r if isinstance(r, HparamRange) else HparamRange(float(r[0]), float(r[1]))


def declare_hparam_range(name: str, r: HparamRange | tuple[float, float]) -> None:
    """Declare the allowed values of hyperparameter ``name`` (e.g. a regime's mixing fraction)."""
    HPARAM_RANGES[name] = as_range(r)


def experiment_hparam_range(exp: Experiment, name: str) -> HparamRange | None:
    """The allowed range of hyperparameter ``name`` in ``exp``: ``hparam_range``, narrowed by
    static bounds the experiment sets (``lam`` lies in ``[0, lam_max]``)."""
    if name == "lam" and hasattr(exp, "lam_max"):
        return HparamRange(0.0, float(exp.lam_max))
    return hparam_range(exp.model, name)


def hparam_range(model: str, name: str) -> HparamRange | None:
    """The allowed range of ``name`` for ``model``: the model's declaration, else the shared one."""
    from collapse_jax.model import MODELS

    spec = MODELS.get(model)
    if spec is not None and name in spec.ranges:
        return as_range(spec.ranges[name])
    return HPARAM_RANGES.get(name)


#: Model families that compute in ``StaticConfig.dtype`` (and so support ``x64=True``); a family
#: declares itself with ``declare_float64(name)`` once it uses the configured dtype throughout.
FLOAT64_MODELS: set[str] = set()


def declare_float64(model: str) -> None:
    """Declare that ``model`` computes in ``static.dtype`` (float64 runs are meaningful)."""
    FLOAT64_MODELS.add(model)


# ----------------------------------------------------------------------------------------------
# Validation

#: Largest pool capacity: slots are indexed with int32.
MAX_CAPACITY = 2**31 - 1
_FLOAT32_MAX = 3.4028234663852886e38
_FLOAT32_TINY = 1.1754943508222875e-38


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


def _check_mapping(field: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{field}={value!r}: must be a dict of name -> value")
    for k in value:
        if not isinstance(k, str):
            raise ConfigError(f"{field}: key {k!r} must be a string")


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
    from collapse_jax.model import MODELS, SOURCES
    from collapse_jax.pool import REGIMES

    if not isinstance(exp, Experiment):
        raise ConfigError(f"config: expected an Experiment, got {type(exp).__name__}")
    _check_str("name", exp.name, nonempty=True)
    if not isinstance(exp.model, str) or exp.model not in MODELS:
        raise ConfigError(
            f"model={exp.model!r}: unknown{did_you_mean(str(exp.model), list(MODELS))}; "
            f"allowed: {', '.join(sorted(MODELS))}"
        )
    spec = MODELS[exp.model]
    if isinstance(exp.regimes, str):
        raise ConfigError(
            f"regimes={exp.regimes!r}: must be a tuple of regime names, e.g. ({exp.regimes!r},)"
        )
    if not isinstance(exp.regimes, tuple) or not exp.regimes:
        raise ConfigError(f"regimes={exp.regimes!r}: must be a non-empty tuple of regime names")
    for r in exp.regimes:
        if not isinstance(r, str) or r not in REGIMES:
            raise ConfigError(
                f"regime={r!r}: unknown{did_you_mean(str(r), list(REGIMES))}; "
                f"allowed: {', '.join(REGIMES)}"
            )
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
    if exp.subsample is not None:
        _check_int("subsample", exp.subsample)
    if exp.chunk_size is not None:
        _check_int("chunk_size", exp.chunk_size)
    _check_str("source", exp.source)
    _check_str("data_path", exp.data_path)
    _check_str("description", exp.description)
    if not isinstance(exp.x64, bool):
        raise ConfigError(f"x64={exp.x64!r}: must be True or False")
    if exp.x64 and exp.model not in FLOAT64_MODELS:
        raise ConfigError(
            f"x64=True: model {exp.model!r} computes in float32 only; float64 runs are "
            f"supported for {', '.join(sorted(FLOAT64_MODELS)) or '(none)'}"
        )
    if exp.generation_chunk is not None:
        _check_int("generation_chunk", exp.generation_chunk)
    _check_int("keep_checkpoints", exp.keep_checkpoints)
    cs = exp.checkpoint_seconds
    if isinstance(cs, bool) or not isinstance(cs, int | float) or not cs >= 0:
        raise ConfigError(f"checkpoint_seconds={cs!r}: must be a number >= 0")
    if exp.source and exp.source not in SOURCES:
        raise ConfigError(
            f"source={exp.source!r}: unknown{did_you_mean(exp.source, list(SOURCES))}; "
            f"allowed: {', '.join(sorted(SOURCES))}"
        )
    if isinstance(exp.lam_max, bool) or not isinstance(exp.lam_max, numbers.Real) or not (
        0 < exp.lam_max < math.inf
    ):
        raise ConfigError(f"lam_max={exp.lam_max!r}: must be a finite number > 0")
    _check_int("window", exp.window)
    if not isinstance(exp.window_keep_real, bool):
        raise ConfigError(f"window_keep_real={exp.window_keep_real!r}: must be True or False")
    _check_mapping("hparams", exp.hparams)
    allowed_hp = known_hparams(exp)
    for k, v in exp.hparams.items():
        if k not in allowed_hp:
            raise ConfigError(
                f"hparams.{k}: not a hyperparameter of model {exp.model!r} or of its regimes"
                f"{did_you_mean(k, list(allowed_hp))}; allowed: "
                f"{', '.join(sorted(allowed_hp)) or '(none)'}"
            )
        if isinstance(v, tuple) and not v:
            raise ConfigError(f"hparams.{k}=(): an empty sweep; give at least one value")
        for x in _as_tuple(v):
            if k == "lam" and isinstance(x, int | float) and not 0 <= x <= exp.lam_max:
                raise ConfigError(
                    f"hparams.lam={x}: must lie in [0, lam_max={exp.lam_max}] (lam_max is static: "
                    f"it fixes the ceil(lam_max * n0) examples sampled per generation)"
                )
            _check_hparam(f"hparams.{k}", x, hparam_range(exp.model, k), exp.x64)
        if isinstance(v, tuple) and len(set(v)) != len(v):
            raise ConfigError(f"hparams.{k}={v!r}: repeated values in a sweep; list each once")
    if not isinstance(exp.metrics, tuple) or not all(isinstance(m, str) for m in exp.metrics):
        raise ConfigError(f"metrics={exp.metrics!r}: must be a tuple of metric names "
                          f"(empty = all); allowed: {', '.join(spec.metrics)}")
    for m in exp.metrics:
        if m not in spec.metrics:
            raise ConfigError(
                f"metrics: {m!r} is not a metric of model {exp.model!r}"
                f"{did_you_mean(m, list(spec.metrics))}; allowed: {', '.join(spec.metrics)}")
    if len(set(exp.metrics)) != len(exp.metrics):
        raise ConfigError(f"metrics={exp.metrics!r}: repeated metric; list each once")
    _check_mapping("options", exp.options)
    for k, v in exp.options.items():
        if k not in spec.options:
            raise ConfigError(
                f"options.{k}: not an option of model {exp.model!r}"
                f"{did_you_mean(k, list(spec.options))}; allowed: "
                f"{', '.join(sorted(spec.options)) or '(none)'}"
            )
        allowed = spec.options[k]
        if not any(v == a and type(v) is type(a) for a in allowed):
            raise ConfigError(f"options.{k}={v!r}: allowed values are {list(allowed)}")
    if exp.subsample is not None and "accumulate_subsample" not in exp.regimes:
        raise ConfigError(
            f"subsample={exp.subsample}: only the accumulate_subsample regime uses it, and "
            f"regimes={exp.regimes!r} does not include it; drop subsample or add that regime"
        )
    for static in exp.statics():
        _check_static(static)
        if spec.check is not None:
            spec.check(static)
        if static.regime == "fresh_real_mix":
            from collapse_jax.model import make_source

            make_source(static)  # raises when the source cannot draw fresh real data
    return exp


def _check_static(static: StaticConfig) -> None:
    """Impossible size combinations of one StaticConfig (the regime's own checks included)."""
    from collapse_jax.pool import REGIMES

    sizes = f"n0={static.n0}, n={static.n}, generations={static.generations}"
    if static.subsample is not None and static.regime == "accumulate_subsample":
        cap = static.n0 + (static.generations - 1) * static.n
        if static.subsample > cap:
            raise ConfigError(
                f"subsample={static.subsample}: larger than the accumulated pool "
                f"(capacity {cap} for {sizes}); use subsample <= {cap}"
            )
    try:
        regime = REGIMES[static.regime](static)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"regime={static.regime!r} with {sizes}: {e}") from None
    if regime.capacity > MAX_CAPACITY:
        raise ConfigError(
            f"regime={static.regime!r} with {sizes}: pool capacity {regime.capacity} exceeds "
            f"{MAX_CAPACITY} (int32 slot indices); use fewer generations or a smaller n"
        )
