"""From an ``Experiment`` to a tidy table: every static group is one compiled sweep.

``run_experiment(exp)`` validates the experiment on the host, then for each StaticConfig (regime x
swept sizes) runs ``seeds x hyperparameter grid`` chains with ``sweep.run_sweep`` and collects one
row per chain x generation. Chains with the same seed share their key (common random numbers), so
regimes and hyperparameter values are compared on the same real data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import pandas as pd

from collapse_jax import theory
from collapse_jax.chain import FLAGS
from collapse_jax.config import ConfigError, Experiment, StaticConfig, validate
from collapse_jax.model import get_model_spec, make_source
from collapse_jax.pool import regime_hparams
from collapse_jax.sweep import run_sweep

#: Columns every results table starts with.
ID_COLUMNS = ("experiment", "model", "regime", "seed", "generation")


@dataclasses.dataclass
class Results:
    """Outputs of ``run_experiment``.

    Attributes:
        table: one row per chain x generation: ``experiment, model, regime, seed, generation``,
            one column per swept field, one per metric.
        experiment: the validated experiment.
        groups: per StaticConfig: sizes, chains, chunk size, compile and run seconds.
        metrics: metric names in display order.
        swept: names of the swept columns.
    """

    table: pd.DataFrame
    experiment: Experiment
    groups: list[dict[str, Any]]
    metrics: tuple[str, ...]
    swept: tuple[str, ...]

    def theory_curve(self, regime: str, metric: str, key: dict[str, Any]) -> np.ndarray | None:
        """Closed-form curve over generations for one facet (swept values ``key``), or None."""
        return expected_curve(self.experiment, regime, metric, key)

    def final(self) -> pd.DataFrame:
        """Mean, median, standard error and theory of each metric at the last generation."""
        return final_summary(self)


def expected_curve(
    exp: Experiment, regime: str, metric: str, key: dict[str, Any]
) -> np.ndarray | None:
    """``theory.expected`` for the static config and hyperparameters a facet ``key`` selects."""
    spec = get_model_spec(exp.model)
    static = _static_for(exp, regime, key)
    defaults = {**spec.hparams, **regime_hparams(exp.regimes)}
    hp = {**defaults, **{k: v for k, v in exp.hparams.items() if not isinstance(v, tuple)}}
    hp.update({k: v for k, v in key.items() if k in defaults})
    return theory.expected(static, hp, metric, np.arange(exp.generations))


def _static_for(exp: Experiment, regime: str, key: dict[str, Any]) -> StaticConfig:
    for s in exp.statics():
        if s.regime == regime and all(
            getattr(s, k) == v for k, v in key.items() if k in ("n", "n0", "d")
        ):
            return s
    raise KeyError(f"no static config for regime={regime} {key}")


def run_experiment(
    exp: Experiment,
    *,
    progress: bool | Callable[[str, int, int], None] = False,
    on_group: Callable[[pd.DataFrame, dict[str, Any]], None] | None = None,
) -> Results:
    """Run every chain an experiment describes and return the tidy table.

    Args:
        exp: the experiment (validated here first: bad input raises ``ConfigError`` before any
            compile).
        progress: True for a tqdm bar on stderr, or a callable ``(group, done, total)``.
        on_group: called with ``(rows, group_info)`` as soon as each StaticConfig group has
            finished, e.g. to write its rows to disk so an error in a later group loses nothing
            (``results.GroupWriter``).

    Returns:
        Results with one row per chain x generation.

    >>> from collapse_jax import Experiment, run_experiment
    >>> r = run_experiment(Experiment(name="doc", model="gaussian", regimes=("replace",),
    ...                               seeds=2, generations=3, n=8, d=2, n_test=8))
    >>> r.table.shape[0], list(r.table.columns[:5])
    (6, ['experiment', 'model', 'regime', 'seed', 'generation'])
    """
    exp = validate(exp)
    spec = get_model_spec(exp.model)
    swept = exp.swept()
    grid = exp.hparam_grid({**spec.hparams, **regime_hparams(exp.regimes)})
    seeds = np.arange(exp.seeds, dtype=np.int32)
    ids = np.tile(seeds, len(grid))
    hp = {k: np.repeat(np.asarray([g[k] for g in grid], np.float64), exp.seeds) for k in grid[0]}
    statics = exp.statics()
    all_args = [load_source_args(s) for s in statics]  # bad data files fail before any compile
    total = len(statics) * len(ids)
    report = _progress_callback(progress, total)

    frames, groups = [], []
    for i, (static, args) in enumerate(zip(statics, all_args, strict=True)):
        label = _group_label(static, swept)
        with precision(exp.x64):
            res = run_sweep(
                static, jax.random.key(exp.root_seed), ids, hp, args, chunk_size=exp.chunk_size,
                progress=lambda done, i=i, label=label: report(label, i * len(ids) + done),
            )
        if res.overflow.any():
            raise RuntimeError(
                f"pool overflow in {int(res.overflow.sum())} chains of {label}: the regime's "
                f"capacity is too small for n0={static.n0}, n={static.n}, "
                f"generations={static.generations}"
            )
        frames.append(_frame(exp, static, swept, ids, hp, res.metrics))
        groups.append({
            "regime": static.regime, "n": static.n, "n0": static.n0, "d": static.d,
            "chains": int(len(ids)), "chunk_size": res.chunk_size,
            "compile_seconds": res.compile_seconds, "run_seconds": res.run_seconds,
        })
        if on_group is not None:
            on_group(frames[-1], groups[-1])
    report(None, total)
    table = pd.concat(frames, ignore_index=True)
    metrics = tuple(m for m in spec.metrics if m in table and m not in FLAGS) + tuple(
        c for c in table.columns if c not in ID_COLUMNS and c not in swept
        and c not in spec.metrics and c not in FLAGS
    )
    return Results(table, exp, groups, metrics, tuple(swept))


def precision(x64: bool):
    """A context enabling ``jax_enable_x64`` for a float64 run (nothing for float32).

    The flag is restored on exit, so a float64 run never changes later float32 work.
    """
    return jax.enable_x64(True) if x64 else contextlib.nullcontext()


def load_source_args(static: StaticConfig) -> Any:
    """``Source.load(static)``, with a missing or malformed data file reported as ConfigError."""
    name = static.source or get_model_spec(static.model).source
    try:
        return make_source(static).load(static)
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise ConfigError(f"source={name!r}: cannot load its data: {type(e).__name__}: "
                          f"{_one_line(e)}") from e


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def flag_counts(table: pd.DataFrame, swept: tuple[str, ...] = ()) -> dict[str, Any]:
    """How many chains hit each flag (``FLAGS``) at any generation, overall and per regime.

    Returns ``{"chains": N, "collapsed": k, "nonfinite": k, "by_regime": {regime: {...}}}``.
    """
    present = [f for f in FLAGS if f in table]
    keys = ["regime", *swept, "seed"]
    per_chain = table.groupby(keys, sort=False)[present].any()
    out: dict[str, Any] = {"chains": int(len(per_chain))}
    out.update({f: int(per_chain[f].sum()) for f in present})
    out["by_regime"] = {
        str(r): {"chains": int(len(f)), **{k: int(f[k].sum()) for k in present}}
        for r, f in per_chain.groupby(level="regime", sort=False)
    }
    return out


def _group_label(static: StaticConfig, swept: dict[str, tuple]) -> str:
    parts = [static.regime] + [f"{k}={getattr(static, k)}" for k in ("n", "n0", "d") if k in swept]
    return " ".join(parts)


def _frame(exp, static, swept, ids, hp, metrics) -> pd.DataFrame:
    chains, gens = next(iter(metrics.values())).shape
    cols: dict[str, Any] = {
        "experiment": exp.name,
        "model": exp.model,
        "regime": static.regime,
        "seed": np.repeat(ids, gens),
        "generation": np.tile(np.arange(gens, dtype=np.int32), chains),
    }
    for k in swept:
        cols[k] = getattr(static, k) if k in ("n", "n0", "d") else np.repeat(hp[k], gens)
    for k, v in metrics.items():
        cols[k] = v.reshape(-1).astype(bool) if k in FLAGS else v.reshape(-1)
    return pd.DataFrame(cols)


def _progress_callback(progress, total: int) -> Callable[[str | None, int], None]:
    if callable(progress):
        return lambda label, done: progress(label, done, total)
    if not progress:
        return lambda label, done: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="chain", file=sys.stderr, dynamic_ncols=True)

    def update(label, done):
        if label is not None:
            bar.set_description(label)
        bar.update(done - bar.n)
        if label is None:
            bar.close()

    return update


def final_summary(results: Results) -> pd.DataFrame:
    """One row per (regime, swept values, metric) at the last generation.

    Columns: ``mean, median, std, sem, theory`` (theory is NaN where there is no closed form).
    """
    t = results.table
    last = t[t["generation"] == t["generation"].max()]
    keys = ["regime", *results.swept]
    rows = []
    for group, frame in last.groupby(keys, sort=False):
        group = group if isinstance(group, tuple) else (group,)
        facet = dict(zip(keys, group, strict=True))
        for m in results.metrics:
            v = frame[m].to_numpy(np.float64)
            curve = results.theory_curve(facet["regime"], m, {
                k: v_ for k, v_ in facet.items() if k != "regime"})
            rows.append({
                **facet, "metric": m, "mean": v.mean(), "median": np.median(v),
                "std": v.std(ddof=1) if v.size > 1 else 0.0,
                "sem": v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else 0.0,
                "theory": float(curve[-1]) if curve is not None else float("nan"),
            })
    return pd.DataFrame(rows)


__all__ = ["ConfigError", "Results", "final_summary", "run_experiment"]
