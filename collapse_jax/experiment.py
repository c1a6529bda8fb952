"""From an ``Experiment`` to a tidy table: every static group is one compiled sweep.

``run_experiment(exp)`` validates the experiment on the host, then for each StaticConfig (regime x
swept sizes) runs ``seeds x hyperparameter grid`` chains with ``sweep.run_sweep`` and collects one
row per chain x generation. Chains with the same seed share their key (common random numbers), so
regimes and hyperparameter values are compared on the same real data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import pandas as pd

from collapse_jax import tables, theory
from collapse_jax.chain import FLAGS
from collapse_jax.config import (
    NOT_RESULT_FIELDS,
    ConfigError,
    Experiment,
    StaticConfig,
    validate,
)
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
    progress: bool | Callable[[str, float, int], None] = False,
    on_group: Callable[[pd.DataFrame, dict[str, Any]], None] | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    mesh: Any = None,
) -> Results:
    """Run every chain an experiment describes and return the tidy table.

    Chains are sharded over every device (``sweep.make_mesh``) and run in chain chunks
    (``exp.chunk_size``, chosen from a memory estimate when None) and generation chunks
    (``exp.generation_chunk``). With ``out_dir`` the table is written there in parts as it is
    computed and the chain state is checkpointed at every generation chunk (``checkpoint.py``), so
    a killed run loses nothing: ``resume=True`` continues from the latest checkpoint and gives a
    table bit-identical to an uninterrupted run.

    Args:
        exp: the experiment (validated here first: bad input raises ``ConfigError`` before any
            compile).
        progress: True for a tqdm bar on stderr (generation, chains/s, ETA), or a callable
            ``(group, chains_done, total_chains)`` (``chains_done`` counts finished generations as
            fractions of a chain).
        out_dir: directory for results parts (``parts/``) and checkpoints (``checkpoints/``);
            required on a multi-host run. None keeps everything in memory.
        resume: continue from the latest checkpoint in ``out_dir`` (False starts over, clearing
            ``out_dir/parts`` and ``out_dir/checkpoints``).
        mesh: device mesh with axis ``'chains'`` (default: every device of every host).
        on_group: called with ``(rows, group_info)`` as soon as each StaticConfig group has
            finished, e.g. to write its rows to disk so an error in a later group loses nothing
            (``results.GroupWriter``).

    Returns:
        Results with one row per chain x generation (on a multi-host run, process 0 gets every
        row; other processes get their own).

    >>> from collapse_jax import Experiment, run_experiment
    >>> r = run_experiment(Experiment(name="doc", model="gaussian", regimes=("replace",),
    ...                               seeds=2, generations=3, n=8, d=2, n_test=8))
    >>> r.table.shape[0], list(r.table.columns[:5])
    (6, ['experiment', 'model', 'regime', 'seed', 'generation'])
    """
    from collapse_jax import checkpoint as ckpt
    from collapse_jax.sweep import SweepPlan, SweepStart, abstract_state, make_mesh

    exp = validate(exp)
    if resume and out_dir is None:
        raise ConfigError("resume=True: needs out_dir (the directory holding the checkpoints)")
    if out_dir is None and jax.process_count() > 1:
        raise ConfigError(f"out_dir=None: a multi-host run ({jax.process_count()} processes) "
                          f"needs an output directory (each process writes its own results)")
    spec = get_model_spec(exp.model)
    swept = exp.swept()
    grid = exp.hparam_grid({**spec.hparams, **regime_hparams(exp.regimes)})
    seeds = np.arange(exp.seeds, dtype=np.int32)
    ids = np.tile(seeds, len(grid))
    hp = {k: np.repeat(np.asarray([g[k] for g in grid], np.float64), exp.seeds) for k in grid[0]}
    statics = exp.statics()
    all_args = [load_source_args(s) for s in statics]  # bad data files fail before any compile
    total = len(statics) * len(ids)
    report = _progress_callback(progress if jax.process_index() == 0 else False, total)
    mesh = make_mesh() if mesh is None else mesh
    root = jax.random.key(exp.root_seed)

    store = None
    restored = None
    if out_dir is not None:
        store = ckpt.RunStore(out_dir, fingerprint(exp), keep=exp.keep_checkpoints,
                              resume=resume, every_seconds=float(exp.checkpoint_seconds))
        if resume:
            def target(record):
                static = statics[record["group"]]
                if record["generation"] >= static.generations:
                    return None
                args = make_source(static).load(static)
                return abstract_state(static, args, record["plan"]["chunk_size"], mesh)

            restored = store.restore(target)

    columns: list[dict[str, np.ndarray]] = []
    groups: list[dict[str, Any]] = []
    try:
        for i, static in enumerate(statics):
            label = _group_label(static, swept)
            plan, start = None, None
            if restored is not None:
                record, state = restored
                if i < record["group"]:
                    report(label, (i + 1) * len(ids))
                    continue
                if i == record["group"]:
                    plan = SweepPlan(**record["plan"])
                    if record["generation"] >= static.generations:
                        start = SweepStart(record["chain_chunk"] + 1, 0, None)
                    else:
                        start = SweepStart(record["chain_chunk"], record["generation"], state)
            args = all_args[i]
            gen_box = [0]

            def on_chunk(out, i=i, static=static, label=label, gen_box=gen_box):
                if out.overflow.any():
                    raise RuntimeError(
                        f"pool overflow in {int(out.overflow.sum())} chains of {label}: the "
                        f"regime's capacity is too small for n0={static.n0}, n={static.n}, "
                        f"generations={static.generations}"
                    )
                if store is not None:
                    cols = _columns(static, swept, ids, hp, out.metrics, i, out.positions,
                                    out.gen_start)
                    store.chunk_done(i, cols, out.chain_chunk, out.gen_start, out.gen_stop,
                                     static.generations, out.state, out.plan._asdict())
                gen_box[0] = out.gen_stop

            with precision(exp.x64):
                res = run_sweep(
                    static, root, ids, hp, args, chunk_size=exp.chunk_size,
                    generation_chunk=exp.generation_chunk, mesh=mesh, plan=plan, start=start,
                    on_chunk=on_chunk,
                    progress=lambda done, i=i, label=label, g=static.generations,
                    box=gen_box: report(f"{label} gen {box[0]}/{g}", i * len(ids) + done),
                )
            # the whole chains computed in this call (a resumed run's first chunk is in parts)
            group_cols = _columns(static, swept, ids, hp, res.metrics, i, res.positions, 0) \
                if len(res.positions) else None
            if store is None:
                columns.append(group_cols)
            groups.append({
                "regime": static.regime, "n": static.n, "n0": static.n0, "d": static.d,
                "chains": int(len(ids)), "chunk_size": res.chunk_size,
                "generation_chunk": res.generation_chunk,
                "compile_seconds": res.compile_seconds, "run_seconds": res.run_seconds,
            })
            if on_group is not None and group_cols is not None:
                on_group(ckpt.finalize_table(_table(exp, statics, group_cols)), groups[-1])
        report(None, total)
        if store is not None:
            cols = store.finish()
        else:
            cols = {k: np.concatenate([c[k] for c in columns]) for k in columns[0]}
    finally:
        if store is not None:
            store.close()
    if jax.process_index() == 0:
        _check_complete(cols, statics, len(ids), exp.generations)
    table = ckpt.finalize_table(_table(exp, statics, cols))
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


def fingerprint(exp: Experiment) -> dict[str, Any]:
    """The experiment fields that fix the results (a resumed run must match them)."""
    d = exp.to_dict()
    return {k: v for k, v in d.items() if k not in NOT_RESULT_FIELDS}


def _check_complete(cols: dict[str, np.ndarray], statics, chains: int, generations: int) -> None:
    """Every (group, chain, generation) exactly once (``cols`` sorted by ``SORT_COLUMNS``);
    raise naming what is wrong otherwise."""
    expected = len(statics) * chains * generations
    rows = len(cols["_group"]) if cols else 0
    unique = rows
    if rows > 1:
        keys = np.stack([cols[k].astype(np.int64) for k in tables.SORT_COLUMNS], axis=1)
        unique = rows - int(np.all(np.diff(keys, axis=0) == 0, axis=1).sum())
    if rows != expected or unique != expected:
        raise RuntimeError(
            f"results table has {rows} rows ({unique} distinct chain x generation) but "
            f"the experiment has {expected}: the parts on disk are incomplete or duplicated"
        )


def _group_label(static: StaticConfig, swept: dict[str, tuple]) -> str:
    parts = [static.regime] + [f"{k}={getattr(static, k)}" for k in ("n", "n0", "d") if k in swept]
    return " ".join(parts)


def _columns(static, swept, ids, hp, metrics, group, positions, gen_start) -> dict[str, Any]:
    """Numeric columns of chains ``positions`` (indices into ``ids``) for generations
    ``gen_start ..`` (``metrics``: name -> ``[chains, generations]``), chain-major."""
    chains, gens = next(iter(metrics.values())).shape
    positions = np.asarray(positions, np.int64)
    rows = chains * gens
    cols: dict[str, Any] = {
        "_group": np.full(rows, group, np.int64),
        "_chain": np.repeat(positions, gens),
        "seed": np.repeat(ids[positions], gens),
        "generation": np.tile(np.arange(gen_start, gen_start + gens, dtype=np.int32), chains),
    }
    for k in swept:
        cols[k] = np.full(rows, getattr(static, k), np.int64) if k in ("n", "n0", "d") else \
            np.repeat(hp[k][positions].astype(static.dtype), gens)
    for k, v in metrics.items():
        cols[k] = v.reshape(-1).astype(bool) if k in FLAGS else v.reshape(-1)
    return cols


def _table(exp: Experiment, statics, cols: dict[str, np.ndarray]) -> pd.DataFrame:
    """The DataFrame of ``_columns`` rows: helper columns, ``ID_COLUMNS``, swept, metrics."""
    if not cols:
        return pd.DataFrame()
    group = cols["_group"]
    zeros = np.zeros(len(group), np.int32)
    out: dict[str, Any] = {
        "_group": group, "_chain": cols["_chain"],
        "experiment": tables.strings([exp.name], zeros),
        "model": tables.strings([exp.model], zeros),
        "regime": tables.strings([s.regime for s in statics], group),
    }
    out.update((k, v) for k, v in cols.items() if k not in out)
    return tables.frame(out)


def _progress_callback(progress, total: int) -> Callable[[str | None, float], None]:
    if callable(progress):
        return lambda label, done: progress(label, done, total)
    if not progress:
        return lambda label, done: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="chain", file=sys.stderr, dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} chains "
                          "[{elapsed}<{remaining}, {rate_fmt}]")

    def update(label, done):
        if label is not None:
            bar.set_description(label, refresh=False)
        bar.update(done - bar.n)
        if label is None:
            bar.close()

    return update


def final_summary(results: Results) -> pd.DataFrame:
    """One row per (regime, swept values, metric) at the last generation.

    Columns: ``mean, median, std, sem, theory`` (theory is NaN where there is no closed form).
    Chains flagged ``nonfinite`` make these inf or NaN, without a warning.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        return _final_summary(results)


def _final_summary(results: Results) -> pd.DataFrame:
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
