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
from collections.abc import Mapping, Sequence
from typing import Any

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
        subsample: fit size of ``accumulate_subsample`` (None = n0).
        options: model options as sorted ``(name, value)`` pairs (static, e.g. ``unbiased``).
        lam_max: largest ``lam`` of ``fixed_real_mix`` (fixes the ``ceil(lam_max n0)`` examples
            sampled per generation).
        window: number of synthetic generations the ``window`` regime keeps.
        window_keep_real: whether the ``window`` regime keeps D0.
    """

    model: str
    regime: str
    n0: int
    n: int
    d: int
    generations: int
    n_test: int = 1000
    source: str = ""
    subsample: int | None = None
    options: tuple[tuple[str, Any], ...] = ()
    lam_max: float = 1.0
    window: int = 2
    window_keep_real: bool = True

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)


def hparams_from(values: Mapping[str, float]) -> dict[str, Any]:
    """Hyperparameters as float32 scalars (explicit dtype: no weak-type recompiles)."""
    return {k: jnp.asarray(v, jnp.float32) for k, v in sorted(values.items())}


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
        hparams: hyperparameter overrides (of the model or of the regimes, see
            ``pool.REGIME_HPARAMS``); a tuple of values is a vmapped sweep (no recompile).
        options: static model options (e.g. ``{"unbiased": True}``).
        root_seed: seed of the root key.
        chunk_size: chains per compiled batch (None = choose from the memory estimate).
        description: free text, copied into ``config.json``.
        lam_max: static bound of ``fixed_real_mix``'s ``lam`` (see StaticConfig).
        window: generations of synthetic data the ``window`` regime keeps.
        window_keep_real: whether ``window`` keeps D0.
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
    hparams: Mapping[str, float | tuple[float, ...]] = dataclasses.field(default_factory=dict)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    root_seed: int = 0
    chunk_size: int | None = None
    description: str = ""
    lam_max: float = 1.0
    window: int = 2
    window_keep_real: bool = True

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
                        subsample=self.subsample,
                        options=options,
                        lam_max=float(self.lam_max),
                        window=self.window,
                        window_keep_real=self.window_keep_real,
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
        option.

        >>> e = Experiment(name="x", model="gaussian").override(["seeds=4", "n=10,32"])
        >>> e.seeds, e.n
        (4, (10, 32))
        """
        exp = self
        fields = {f.name for f in dataclasses.fields(self)}
        for item in assignments:
            if "=" not in item:
                raise ConfigError(f"--set {item!r}: expected key=value")
            key, raw = item.split("=", 1)
            key = key.strip()
            value = parse_value(raw)
            if key == "regime":
                key = "regimes"
            if key == "regimes" and not isinstance(value, tuple):
                value = (value,)
            if key.startswith("hparams.") or key.startswith("options."):
                group, sub = key.split(".", 1)
                exp = dataclasses.replace(exp, **{group: {**getattr(exp, group), sub: value}})
            elif key in fields:
                exp = dataclasses.replace(exp, **{key: value})
            else:
                from collapse_jax.model import get_model_spec
                from collapse_jax.pool import regime_hparams

                spec = get_model_spec(exp.model) if _is_model(exp.model) else None
                if key in regime_hparams(exp.regimes):
                    exp = dataclasses.replace(exp, hparams={**exp.hparams, key: value})
                elif spec is not None and key in spec.hparams:
                    exp = dataclasses.replace(exp, hparams={**exp.hparams, key: value})
                elif spec is not None and key in spec.options:
                    exp = dataclasses.replace(exp, options={**exp.options, key: value})
                else:
                    known = sorted(fields | {"regime"} | set(spec.hparams if spec else ())
                                   | set(spec.options if spec else ()))
                    raise ConfigError(f"unknown key {key!r}{did_you_mean(key, known)}; "
                                      f"known keys: {', '.join(known)}")
        return exp


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
# Validation


def _check_int(field: str, value: Any, lo: int = 1, allow_tuple: bool = False) -> None:
    values = value if (allow_tuple and isinstance(value, tuple)) else (value,)
    if allow_tuple and isinstance(value, tuple) and not value:
        raise ConfigError(f"{field}=(): an empty sweep; give at least one value")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            kind = "an integer or a tuple of integers" if allow_tuple else "an integer"
            raise ConfigError(f"{field}={v!r}: must be {kind} >= {lo}")
        if v < lo:
            raise ConfigError(f"{field}={v}: must be >= {lo}")


def validate(exp: Experiment) -> Experiment:
    """Check an experiment on the host; raise ``ConfigError`` naming the first bad field.

    Returns the experiment unchanged so calls chain. Model-specific checks (e.g. n > d) are
    delegated to the model's ``check`` hook for every static combination.
    """
    from collapse_jax.model import MODELS, SOURCES
    from collapse_jax.pool import REGIMES, regime_hparams

    if not isinstance(exp.name, str) or not exp.name:
        raise ConfigError(f"name={exp.name!r}: must be a non-empty string")
    if exp.model not in MODELS:
        raise ConfigError(
            f"model={exp.model!r}: unknown{did_you_mean(str(exp.model), list(MODELS))}; "
            f"allowed: {', '.join(sorted(MODELS))}"
        )
    spec = MODELS[exp.model]
    if isinstance(exp.regimes, str) or not isinstance(exp.regimes, tuple) or not exp.regimes:
        raise ConfigError(f"regimes={exp.regimes!r}: must be a non-empty tuple of regime names")
    for r in exp.regimes:
        if r not in REGIMES:
            raise ConfigError(
                f"regime={r!r}: unknown{did_you_mean(str(r), list(REGIMES))}; "
                f"allowed: {', '.join(REGIMES)}"
            )
    _check_int("seeds", exp.seeds)
    _check_int("generations", exp.generations)
    _check_int("n", exp.n, allow_tuple=True)
    if exp.n0 is not None:
        _check_int("n0", exp.n0, allow_tuple=True)
    _check_int("d", exp.d, allow_tuple=True)
    _check_int("n_test", exp.n_test)
    _check_int("root_seed", exp.root_seed, lo=0)
    if exp.subsample is not None:
        _check_int("subsample", exp.subsample)
    if exp.chunk_size is not None:
        _check_int("chunk_size", exp.chunk_size)
    if exp.source and exp.source not in SOURCES:
        raise ConfigError(
            f"source={exp.source!r}: unknown{did_you_mean(exp.source, list(SOURCES))}; "
            f"allowed: {', '.join(sorted(SOURCES))}"
        )
    if isinstance(exp.lam_max, bool) or not isinstance(exp.lam_max, int | float) or not (
        exp.lam_max > 0
    ):
        raise ConfigError(f"lam_max={exp.lam_max!r}: must be a number > 0")
    _check_int("window", exp.window)
    if not isinstance(exp.window_keep_real, bool):
        raise ConfigError(f"window_keep_real={exp.window_keep_real!r}: must be True or False")
    allowed_hp = {**spec.hparams, **regime_hparams(exp.regimes)}
    for k, v in exp.hparams.items():
        if k not in allowed_hp:
            raise ConfigError(
                f"hparams.{k}: not a hyperparameter of model {exp.model!r} or of regimes "
                f"{', '.join(exp.regimes)}{did_you_mean(k, list(allowed_hp))}; allowed: "
                f"{', '.join(sorted(allowed_hp)) or '(none)'}"
            )
        for x in _as_tuple(v):
            if isinstance(x, bool) or not isinstance(x, int | float):
                raise ConfigError(f"hparams.{k}={x!r}: must be a number or a tuple of numbers")
            if k == "lam" and not 0 <= x <= exp.lam_max:
                raise ConfigError(
                    f"hparams.lam={x}: must lie in [0, lam_max={exp.lam_max}] (lam_max is static: "
                    f"it fixes the ceil(lam_max * n0) examples sampled per generation)"
                )
            if k == "rho" and not 0 <= x <= 1:
                raise ConfigError(f"hparams.rho={x}: must lie in [0, 1] (fraction of fresh data)")
    for k, v in exp.options.items():
        if k not in spec.options:
            raise ConfigError(
                f"options.{k}: not an option of model {exp.model!r}"
                f"{did_you_mean(k, list(spec.options))}; allowed: "
                f"{', '.join(sorted(spec.options)) or '(none)'}"
            )
        allowed = spec.options[k]
        if v not in allowed:
            raise ConfigError(f"options.{k}={v!r}: allowed values are {list(allowed)}")
    for static in exp.statics():
        if static.subsample is not None and static.regime == "accumulate_subsample":
            cap = static.n0 + (static.generations - 1) * static.n
            if static.subsample > cap:
                raise ConfigError(
                    f"subsample={static.subsample}: larger than the accumulated pool "
                    f"(capacity {cap} for n0={static.n0}, n={static.n}, "
                    f"generations={static.generations})"
                )
        if spec.check is not None:
            spec.check(static)
        if static.regime == "fresh_real_mix":
            from collapse_jax.model import make_source

            make_source(static)  # raises when the source cannot draw fresh real data
    return exp
