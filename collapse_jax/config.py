"""Configuration as plain data: what fixes shapes (static) vs what is vmapped (hyperparameters).

``StaticConfig`` is frozen and hashable: it holds every size that fixes array shapes (pool
capacity, n per generation, number of generations, dimension, model options). Hyperparameters
are float32 scalars per chain (noise sigma, learning rate, lambda, temperature, ...): changing
their values never recompiles, and a sweep over them is one ``vmap``.

``Experiment`` is what a user writes in ``configs/*.py``: regimes x static sweeps (compiled
separately) x hyperparameter sweeps and seeds (vmapped). This module reads no registry: checking
an experiment against the registered models and regimes, ``--set`` overrides and the resolved
run (``RunSpec``) live in ``validate.py``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp


class ConfigError(ValueError):
    """A bad configuration value; the message names the field and what is allowed (the CLI
    exits with code 2 on it). A ``ValueError``, so generic handlers catch it too.

    >>> from collapse_jax import Experiment, validate
    >>> try:
    ...     validate(Experiment(name="x", model="gaussian", regimes=("keep",)))
    ... except ConfigError as e:
    ...     print(e)
    regime='keep': unknown; allowed: replace, accumulate, ...
    """


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

    >>> s = StaticConfig(model="gaussian", regime="accumulate", n0=10, n=5, d=2, generations=4)
    >>> s.n_test, s.dtype, hash(s) == hash(dataclasses.replace(s)), dataclasses.replace(s, n=6) == s
    (1000, 'float32', True, False)
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

    def __post_init__(self):
        # a dict of options or a list of metrics is accepted and stored hashable (sorted pairs,
        # a tuple): a StaticConfig keys the compile caches
        if isinstance(self.options, Mapping):
            object.__setattr__(self, "options", tuple(sorted(self.options.items())))
        if isinstance(self.metrics, list):
            object.__setattr__(self, "metrics", tuple(self.metrics))

    def option(self, name: str, default: Any = None) -> Any:
        """The value of option ``name`` (``default`` when unset).

        >>> StaticConfig("gaussian", "replace", 8, 8, 2, 3, options={"unbiased": True}).options
        (('unbiased', True),)
        """
        return dict(self.options).get(name, default)


def hparams_from(values: Mapping[str, float], dtype: Any = jnp.float32) -> dict[str, Any]:
    """Hyperparameters as scalars of ``dtype`` (explicit dtype: no weak-type recompiles), sorted
    by name.

    >>> hparams_from({"sigma": 2, "scale": 1.0})
    {'scale': Array(1., dtype=float32), 'sigma': Array(2., dtype=float32)}
    """
    return {k: jnp.asarray(v, dtype) for k, v in sorted(values.items())}


#: Experiment fields that do not change the results: free to differ when a run is resumed or
#: rerun into its own output directory.
NOT_RESULT_FIELDS = ("chunk_size", "generation_chunk", "keep_checkpoints", "checkpoint_seconds",
                     "description")

#: ``Experiment.compile``: how XLA compiles the sweep's programs (``compiling.COMPILER_OPTIONS``).
COMPILE_MODES = ("optimized", "fast")

#: Fields of an experiment whose value may be a tuple: a sweep compiled once per value.
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
            ``regimes.REGIME_HPARAMS``); a tuple of values is a vmapped sweep (no recompile).
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
            measured duration of the last state save (``store.CHECKPOINT_SHARE``), so a large
            state costs at most ~10% of the run. A killed run loses at most about one interval
            of work.
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
        snapshots: samples kept per snapshot of a model for figures and reading (the first chain
            of every group, at a few generations); None = the model family's default
            (``ModelSpec.snapshot``: 0 for the classical families, e.g. 16 images for the VAE).
        compile: ``"optimized"`` (XLA's default code generation) or ``"fast"`` (LLVM
            optimisation level 0: programs compile 2-3x faster and may run slower; for sweeps
            whose chains take seconds, where compiling dominates the wall time). The two round
            differently in the last bits, so it is part of the run's fingerprint.

    >>> e = Experiment(name="demo", model="gaussian", n=(10, 100), d=2,
    ...                hparams={"sigma": (1.0, 2.0)})
    >>> e.regimes, e.static_values(), len(e.hparam_grid({"scale": 1.0}))  # compiled, vmapped
    (('replace', 'accumulate'), [(10, 10, 2), (100, 100, 2)], 2)
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
    snapshots: int | None = None
    compile: str = "optimized"

    def swept(self) -> dict[str, tuple]:
        """Every swept field (static or hyperparameter) with its values.

        >>> Experiment(name="x", model="m", n=(10, 32), hparams={"sigma": (1.0, 2.0)}).swept()
        {'n': (10, 32), 'sigma': (1.0, 2.0)}
        """
        out = {k: getattr(self, k) for k in STATIC_SWEEPS if isinstance(getattr(self, k), tuple)}
        out.update({k: v for k, v in self.hparams.items() if isinstance(v, tuple)})
        return out

    def hparam_grid(self, defaults: Mapping[str, float]) -> list[dict[str, float]]:
        """The product of swept hyperparameter values, each merged over ``defaults``.

        >>> Experiment(name="x", model="m", hparams={"a": (1.0, 2.0)}).hparam_grid({"b": 0.5})
        [{'a': 1.0, 'b': 0.5}, {'a': 2.0, 'b': 0.5}]
        """
        merged = {**defaults, **self.hparams}
        names = sorted(merged)
        values = [as_tuple(merged[k]) for k in names]
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]

    def static_values(self) -> list[tuple[int, int, int]]:
        """The ``(n, n0, d)`` combinations of the static sweeps, in a stable order (n0 = n when
        unset)."""
        return [(n, n if n0 is None else n0, d) for n, n0, d in itertools.product(
            as_tuple(self.n), as_tuple(self.n0), as_tuple(self.d))]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def as_tuple(v: Any) -> tuple:
    return v if isinstance(v, tuple) else (v,)


def jsonable(v: Any) -> Any:
    """Mappings and sequences as dicts and lists (the JSON shape of a config value)."""
    if isinstance(v, Mapping):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, tuple | list):
        return [jsonable(x) for x in v]
    return v


# ----------------------------------------------------------------------------------------------
# Hyperparameter ranges (plain values; models and regimes declare theirs, validate checks them)


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


def as_range(r: HparamRange | tuple[float, float]) -> HparamRange:
    """A ``HparamRange`` from a ``(lo, hi)`` pair (closed) or a ``HparamRange``.

    >>> str(as_range((0, 2)))
    '[0, 2]'
    """
    return r if isinstance(r, HparamRange) else HparamRange(float(r[0]), float(r[1]))
