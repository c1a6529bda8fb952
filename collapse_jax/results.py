"""Results of a run: the tidy table, its summaries, and writing them (atomically) to a directory.

The table has one row per chain x generation: ``experiment, model, regime, seed, generation``,
one column per swept field, one per metric (and the flags ``collapsed`` / ``nonfinite``). It is
assembled from numpy columns without a Python object per row (``tables.py``).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from collapse_jax import tables, theory
from collapse_jax.chain import FLAGS
from collapse_jax.config import StaticConfig
from collapse_jax.files import write_json
from collapse_jax.validate import RunSpec

#: Columns every results table starts with.
ID_COLUMNS = ("experiment", "model", "regime", "seed", "generation")
#: Helper columns of parts and unfinished tables (dropped from the final table).
ORDER_COLUMNS = ("_group", "_chain")
#: Files a run writes into its output directory (``--overwrite`` removes these and ``*.png``;
#: the ``metrics/`` dataset, ``samples/`` and ``checkpoints/`` are cleared by the run itself).
RUN_FILES = ("metrics.csv", "config.json", "summary.json", "samples.txt", "run.log",
             "scaling.csv")

#: ``metrics.csv`` is written for tables of at most this many rows (``write_results(csv=True)``,
#: the CLI's ``--csv``, for any size): the ``metrics/`` Parquet dataset holds every table.
CSV_MAX_ROWS = 1_000_000


@dataclasses.dataclass
class Results:
    """Outputs of ``run_experiment``.

    Attributes:
        table: one row per chain x generation (see the module docstring).
        spec: the resolved run (``validate.RunSpec``).
        groups: per StaticConfig: sizes, chains, chunk size, compile and run seconds.
        metrics: metric names in display order.
        samples: ``{group index: {generation: samples}}`` of each group's first chain, where
            the family keeps snapshots (``ModelSpec.snapshot``), else empty.
        table_seconds: seconds from the last chain to the table (waiting for the last parts,
            assembling and checking the rows).
        derived: arrays computed once from ``table`` and shared by the figures and the
            scaling analysis (``plots.metric_blocks``), each kept with the table it came from.

    >>> from collapse_jax import Experiment, run_experiment
    >>> r = run_experiment(Experiment(name="doc", model="location", regimes=("replace",),
    ...                               seeds=2, generations=3, n=8, d=2, n_test=8))
    >>> r.table.shape, r.metrics, r.table["error"].dtype  # 2 seeds x 3 generations rows
    ((6, 10), ('error', 'pool_size', 'real_fraction'), dtype('float32'))
    >>> print(r.final()[["regime", "metric", "mean", "sem"]].round(3).head(1).to_string())
        regime metric   mean    sem
    0  replace  error  3.314  1.936
    """

    table: pd.DataFrame
    spec: RunSpec
    groups: list[dict[str, Any]]
    metrics: tuple[str, ...]
    samples: dict[int, dict[int, Any]] = dataclasses.field(default_factory=dict)
    table_seconds: float = 0.0
    derived: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def experiment(self):
        return self.spec.experiment

    @property
    def swept(self) -> tuple[str, ...]:
        return tuple(self.spec.swept)

    def theory_curve(self, regime: str, metric: str, facet: dict[str, Any]) -> np.ndarray | None:
        """Closed-form curve over generations for one facet (swept values), or None."""
        static = self.spec.static_for(regime, facet)
        return theory.expected(static, self.spec.hparams_for(facet), metric,
                               np.arange(self.experiment.generations))

    def regime_samples(self) -> dict[str, dict[int, Any]]:
        """``{regime: {generation: samples}}`` from each regime's first group."""
        out: dict[str, dict[int, Any]] = {}
        for i, static in enumerate(self.spec.statics):
            if i in self.samples and static.regime not in out:
                out[static.regime] = self.samples[i]
        return out

    def final(self) -> pd.DataFrame:
        """Mean, median, standard error and theory of each metric at the last generation."""
        return final_summary(self)


# ----------------------------------------------------------------------------------------------
# Table assembly


def columns(spec: RunSpec, group: int, metrics: dict[str, np.ndarray], positions: np.ndarray,
            gen_start: int) -> dict[str, np.ndarray]:
    """Numeric columns of a group's chains ``positions`` (indices into ``spec.chain_ids``) for
    generations ``gen_start ..`` (``metrics``: name -> ``[chains, generations]``), chain-major."""
    static = spec.statics[group]
    chains, gens = next(iter(metrics.values())).shape
    positions = np.asarray(positions, np.int64)
    rows = chains * gens
    cols: dict[str, Any] = {
        "_group": np.full(rows, group, np.int64),
        "_chain": np.repeat(positions, gens),
        "seed": np.repeat(spec.chain_ids[positions], gens),
        "generation": np.tile(np.arange(gen_start, gen_start + gens, dtype=np.int32), chains),
    }
    for k in spec.swept:
        cols[k] = np.full(rows, getattr(static, k), np.int64) if k in ("n", "n0", "d") else \
            np.repeat(spec.hparams[k][positions].astype(static.dtype), gens)
    for k, v in metrics.items():
        cols[k] = v.reshape(-1).astype(bool) if k in FLAGS else v.reshape(-1)
    return cols


def labels(spec: RunSpec, group: int) -> dict[str, str]:
    """The text columns of a group's rows: experiment, model and regime."""
    return {"experiment": spec.experiment.name, "model": spec.experiment.model,
            "regime": spec.statics[group].regime}


def build_table(spec: RunSpec, cols: dict[str, np.ndarray]) -> pd.DataFrame:
    """The table of ``columns`` rows, helper columns dropped: ``ID_COLUMNS``, swept, metrics."""
    if not cols:
        return pd.DataFrame()
    group = cols["_group"]
    zeros = np.zeros(len(group), np.int32)
    out: dict[str, Any] = {
        "experiment": tables.strings([spec.experiment.name], zeros),
        "model": tables.strings([spec.experiment.model], zeros),
        "regime": tables.strings([s.regime for s in spec.statics], group),
    }
    out.update((k, v) for k, v in cols.items() if k not in out and k not in ORDER_COLUMNS)
    return tables.frame(out)


def check_complete(spec: RunSpec, cols: dict[str, np.ndarray]) -> None:
    """Every (group, chain, generation) exactly once (``cols`` sorted by ``SORT_COLUMNS``);
    raise naming what is wrong otherwise."""
    expected = len(spec.statics) * spec.chains * spec.experiment.generations
    rows = len(cols["_group"]) if cols else 0
    unique = rows
    if rows > 1:  # sorted rows: a repeated key is equal to the row before it
        same = np.ones(rows - 1, bool)
        for k in tables.SORT_COLUMNS:
            same &= cols[k][1:] == cols[k][:-1]
        unique = rows - int(same.sum())
    if rows != expected or unique != expected:
        raise RuntimeError(
            f"results table has {rows} rows ({unique} distinct chain x generation) but "
            f"the experiment has {expected}: the parts on disk are incomplete or duplicated")


def metric_names(spec: RunSpec, table: pd.DataFrame) -> tuple[str, ...]:
    """The table's metric columns: the model's in its order, then the pool's."""
    model = tuple(m for m in spec.spec.metrics if m in table and m not in FLAGS)
    known = set(ID_COLUMNS) | set(spec.swept) | set(spec.spec.metrics) | set(FLAGS)
    return model + tuple(c for c in table.columns if c not in known)


# ----------------------------------------------------------------------------------------------
# Summaries


def chain_generations(table: pd.DataFrame) -> int:
    """G when the rows are whole chains of generations ``0 .. G-1`` in order (the layout
    ``run_experiment`` produces), else 0."""
    if "generation" not in table or not len(table):
        return 0
    g = table["generation"].to_numpy()
    gens = int(g.max()) + 1
    if len(g) % gens or not np.array_equal(
            g.reshape(-1, gens), np.broadcast_to(np.arange(gens), (len(g) // gens, gens))):
        return 0
    return gens


def flag_counts(table: pd.DataFrame, swept: tuple[str, ...] = ()) -> dict[str, Any]:
    """How many chains hit each flag (``FLAGS``) at any generation, overall and per regime.

    Returns ``{"chains": N, "collapsed": k, "nonfinite": k, "by_regime": {regime: {...}}}``.
    """
    present = [f for f in FLAGS if f in table]
    gens = chain_generations(table)
    if gens:  # every chain's generations are consecutive rows: reshape instead of group
        per_chain = {f: table[f].to_numpy(bool).reshape(-1, gens).any(axis=1) for f in present}
        regimes = table["regime"].iloc[::gens].to_numpy()
        out: dict[str, Any] = {"chains": int(len(regimes))}
        out.update({f: int(per_chain[f].sum()) for f in present})
        out["by_regime"] = {}
        for r in dict.fromkeys(regimes):
            mask = regimes == r
            out["by_regime"][str(r)] = {"chains": int(mask.sum()),
                                        **{f: int(per_chain[f][mask].sum()) for f in present}}
        return out
    keys = ["regime", *swept, "seed"]
    per_chain = table.groupby(keys, sort=False)[present].any()
    out = {"chains": int(len(per_chain))}
    out.update({f: int(per_chain[f].sum()) for f in present})
    out["by_regime"] = {
        str(r): {"chains": int(len(f)), **{k: int(f[k].sum()) for k in present}}
        for r, f in per_chain.groupby(level="regime", sort=False)
    }
    return out


def final_summary(results: Results) -> pd.DataFrame:
    """One row per (regime, swept values, metric) at the last generation.

    Columns: ``mean, median, std, sem, theory`` (theory is NaN where there is no closed form).
    Chains flagged ``nonfinite`` make these inf or NaN, without a warning.
    """
    t = results.table
    last = t[t["generation"] == t["generation"].max()]
    keys = ["regime", *results.swept]
    rows = []
    with np.errstate(invalid="ignore", over="ignore"):
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


# ----------------------------------------------------------------------------------------------
# Writing


def versions() -> dict[str, Any]:
    """Versions of the library, Python and the numerical stack (every library a chain program
    is traced through), and the devices."""
    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("collapse_jax", "jax", "jaxlib", "flax", "optax", "numpy", "ml_dtypes", "chex"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    out["devices"] = [str(d) for d in jax.devices()]
    return out


def config_record(spec: RunSpec) -> dict[str, Any]:
    """What ``config.json`` holds: the resolved experiment, its static groups, the versions."""
    return {
        "experiment": spec.experiment.to_dict(),
        "statics": [_static_record(s) for s in spec.statics],
        "versions": versions(),
    }


def _static_record(static: StaticConfig) -> dict[str, Any]:
    return vars(static) | {"options": dict(static.options)}


def summary_record(spec: RunSpec, rows: int, groups: list[dict[str, Any]], **extra) -> dict:
    """The common part of ``summary.json``: what ran, how much, and its timing per group."""
    exp = spec.experiment
    return {"experiment": exp.name, "model": exp.model, "rows": int(rows),
            "groups_total": len(spec.statics), "timing": groups, **extra}


def write_results(results: Results, out_dir: str | Path, csv: bool | None = None
                  ) -> dict[str, Path]:
    """Write ``config.json``, ``summary.json`` and, for a table of at most ``CSV_MAX_ROWS`` rows
    (or ``csv=True``), ``metrics.csv`` into ``out_dir``; return the paths written. The table
    itself is the ``metrics/`` Parquet dataset the run wrote as it went; results computed in
    memory get it written here (one part)."""
    out = Path(out_dir)
    spec = results.spec
    paths = {name: out / name for name in ("config.json", "summary.json")}
    dataset = out / "metrics"
    if not dataset.is_dir() or not any(dataset.glob("*.parquet")):
        paths["metrics"] = dataset
        tables.write_parquet(results.table, dataset / "all.parquet")
    if csv or (csv is None and len(results.table) <= CSV_MAX_ROWS):
        paths["metrics.csv"] = out / "metrics.csv"
        tables.write_csv(results.table, paths["metrics.csv"])
    write_json(paths["config.json"], config_record(spec))
    write_json(paths["summary.json"], summary_record(
        spec, len(results.table), results.groups, complete=True,
        groups_done=len(results.groups),
        chains=int(len(results.table) // spec.experiment.generations),
        generations=spec.experiment.generations,
        flags=flag_counts(results.table, results.swept),
        final_generation=results.final().to_dict(orient="records")))
    return paths


def write_partial(spec: RunSpec, out_dir: str | Path, cols: dict[str, np.ndarray],
                  error: BaseException | None = None) -> None:
    """``metrics.csv`` of the finished groups' rows (``cols``) and a ``summary.json`` saying the
    run is not complete (with the error, when there is one)."""
    out = Path(out_dir)
    table = build_table(spec, cols)
    if len(table):
        tables.write_csv(table, out / "metrics.csv")
    done = len(np.unique(cols["_group"])) if cols else 0
    extra = {} if error is None else {"error": f"{type(error).__name__}: "
                                               f"{' '.join(str(error).split())}"}
    write_json(out / "summary.json", summary_record(spec, len(table), [], complete=False,
                                                    groups_done=done, **extra))
