"""Collapse vs data volume: fit the growth of a metric over generations per regime and swept size.

``collapse-jax analyze DIR`` (and the end of every ``collapse-jax run`` whose sweep varies a size
field) reads a finished run and, for every regime x value of the swept size (``n``, ``n0`` --
the linear regression's ``T`` -- or ``d``) x value of any other swept field, computes from the
``[chains, generations]`` block of each of the model's metrics (the pool's bookkeeping columns
``pool_size`` / ``real_fraction`` are left out):

- ``value``: the chain mean at one generation (``--generation``, default the last);
- ``slope``: least-squares slope per generation of the chain-mean curve over every generation
  (least squares is linear in the data, so this equals the mean of the per-chain slopes);
- ``plateau`` (every regime but ``replace``): the mean of the chain-mean curve over the last
  quarter of the generations;
- ``plateau_generation`` (same regimes): the first generation from which the chain mean stays
  within ``PLATEAU_TOL`` (5%) of the plateau at every later generation (NaN when even the last
  does not: the curve is too noisy at this many seeds to say). "Stays", not "first enters": under
  noise a curve that approaches slowly touches the band early by chance, and the first touch would
  be biased early.

Each comes with a percentile bootstrap interval over seeds (``CI`` = 95%): ``RESAMPLES`` resamples
of the chains with replacement, drawn once from a fixed seed as a ``[resamples, chains]`` matrix of
multinomial counts, so every resampled mean curve is one matrix product (no loop per resample).
The closed form's value of each quantity (the same rule applied to ``theory.expected``'s curve) is
the ``theory`` column, NaN where there is none.

Outputs (atomic): ``DIR/scaling.csv``, one row per metric x regime x swept values x quantity
(``estimate, ci_low, ci_high, n_chains, theory``), and ``DIR/scaling.png`` (``plots_scaling``):
the chosen metric at the chosen generation against the size on log-log axes, a line per regime
with its interval, the closed form dashed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from collapse_jax.config import ConfigError, Experiment
from collapse_jax.files import write_text
from collapse_jax.plots import facet_values, metric_blocks
from collapse_jax.plots_scaling import plot_scaling
from collapse_jax.results import Results, build_table, check_complete, metric_names
from collapse_jax.store import PARTS
from collapse_jax.tables import load_columns
from collapse_jax.validate import resolve

#: Swept fields that are sizes (the x axis of the analysis), in order of preference.
SIZE_FIELDS = ("n", "n0", "d")
#: Bootstrap resamples of the chains, the interval's coverage and the resampling seed.
RESAMPLES = 1000
CI = 0.95
SEED = 0
#: A generation has reached the plateau when its chain mean is within this share of it.
PLATEAU_TOL = 0.05
#: Quantities of every regime, and the ones added for regimes that are expected to level off.
QUANTITIES = ("value", "slope")
PLATEAU_QUANTITIES = ("plateau", "plateau_generation")
#: Columns of ``scaling.csv`` after the swept fields.
COLUMNS = ("size_field", "metric", "generation", "quantity", "estimate", "ci_low", "ci_high",
           "n_chains", "theory")


def curve_stats(curves: np.ndarray, generation: int) -> dict[str, np.ndarray]:
    """Every quantity of mean curves ``[k, generations]``, each as ``[k]`` (rules: module doc).

    >>> c = np.array([[0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 2.0, 2.0]])
    >>> {k: v.tolist() for k, v in curve_stats(c, 1).items()}
    {'value': [1.0, 2.0], 'slope': [1.0, 0.3], 'plateau': [3.0, 2.0], 'plateau_generation': [3.0, 1.0]}
    """  # noqa: E501
    gens = curves.shape[1]
    g = np.arange(gens, dtype=np.float64) - (gens - 1) / 2.0
    slope = curves @ g / max(float(g @ g), 1e-300)
    plateau = curves[:, gens - max(gens // 4, 1):].mean(axis=1)
    within = np.abs(curves - plateau[:, None]) <= PLATEAU_TOL * np.abs(plateau[:, None])
    stays = np.logical_and.accumulate(within[:, ::-1], axis=1)[:, ::-1]
    first = np.where(stays[:, -1], np.argmax(stays, axis=1), np.nan)
    return {"value": curves[:, generation], "slope": slope, "plateau": plateau,
            "plateau_generation": first.astype(np.float64)}


@functools.lru_cache(maxsize=4)
def resample_counts(chains: int, resamples: int, seed: int) -> np.ndarray:
    """``[resamples, chains]`` float64 multinomial counts of a bootstrap over ``chains`` chains
    (each row sums to ``chains``); the same for every block of a run with that many chains, so
    drawn once (drawing 1,000 x 10,000 counts costs about half a second)."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(chains, np.full(chains, 1.0 / chains), size=resamples)
    counts = counts.astype(np.float64)  # float64 so the products below use BLAS
    counts.flags.writeable = False
    return counts


def bootstrap(x: np.ndarray, generation: int, resamples: int = RESAMPLES, seed: int = SEED,
              plateau: bool = True) -> tuple[dict[str, tuple[float, float, float]], int]:
    """Estimates and bootstrap intervals of every quantity from one block ``x [chains, gens]``.

    Chains with a non-finite value are left out. ``plateau=False`` skips the plateau
    quantities (NaN): ``value`` and ``slope`` are linear in the mean curve, so each resample
    needs only two weighted sums per chain instead of a whole resampled curve. Returns
    ``({quantity: (estimate, lo, hi)}, chains used)``.

    >>> x = np.arange(12.0).reshape(3, 4)  # three chains of slope 1
    >>> stats, used = bootstrap(x, 3, resamples=50)
    >>> [round(v, 9) for v in stats["slope"]], stats["value"][0], used
    ([1.0, 1.0, 1.0], 7.0, 3)
    >>> fast, _ = bootstrap(x, 3, resamples=50, plateau=False)
    >>> [round(v, 9) for v in fast["slope"]], fast["value"] == stats["value"], fast["plateau"][0]
    ([1.0, 1.0, 1.0], True, nan)
    """
    x = np.asarray(x, np.float64)
    x = x[np.all(np.isfinite(x), axis=1)]
    chains = x.shape[0]
    nan = (float("nan"),) * 3
    if chains == 0:
        return {q: nan for q in QUANTITIES + PLATEAU_QUANTITIES}, 0
    counts = resample_counts(chains, resamples, seed)
    if plateau:
        curves = np.concatenate([x.mean(axis=0)[None], counts @ x / chains])  # [1 + R, G]
        stats = curve_stats(curves, generation)
    else:  # the linear quantities of each chain, then their resampled means
        gens = x.shape[1]
        g = np.arange(gens, dtype=np.float64) - (gens - 1) / 2.0
        per_chain = np.stack([x[:, generation], x @ g / max(float(g @ g), 1e-300)], axis=1)
        means = np.concatenate([per_chain.mean(axis=0)[None], counts @ per_chain / chains])
        stats = {"value": means[:, 0], "slope": means[:, 1]}
    tail = 50.0 * (1.0 - CI)
    out = {q: nan for q in PLATEAU_QUANTITIES}
    for name, v in stats.items():
        lo, hi = (np.nanpercentile(v[1:], [tail, 100.0 - tail]) if np.isfinite(v[1:]).any()
                  else (np.nan, np.nan))
        out[name] = (float(v[0]), float(lo), float(hi))
    return out, chains


def size_fields(swept: dict[str, tuple]) -> tuple[str, ...]:
    """The swept fields that are sizes with at least two values.

    >>> size_fields({"n": (10, 100), "sigma": (1.0, 2.0), "d": (3,)})
    ('n',)
    """
    return tuple(f for f in SIZE_FIELDS if len(swept.get(f, ())) >= 2)


def model_metrics(results: Results) -> tuple[str, ...]:
    """The metrics the analysis covers: the model's own, in its order."""
    return tuple(m for m in results.metrics if m in results.spec.spec.metrics)


def _choose(results: Results, metric: str | None, generation: int | None, size: str | None
            ) -> tuple[str, int, str]:
    sizes = size_fields(results.spec.swept)
    swept = ", ".join(results.spec.swept) or "nothing"
    if not sizes:
        raise ConfigError(f"size: the run sweeps no size field ({', '.join(SIZE_FIELDS)}) over "
                          f"two or more values (it sweeps {swept}); nothing to analyze")
    if size is not None and size not in sizes:
        raise ConfigError(f"size={size!r}: not a swept size of this run; allowed: "
                          f"{', '.join(sizes)}")
    metrics = model_metrics(results)
    if metric is not None and metric not in metrics:
        raise ConfigError(f"metric={metric!r}: unknown; allowed: {', '.join(metrics)}")
    gens = results.experiment.generations
    g = gens - 1 if generation is None else generation
    if not 0 <= g < gens:
        raise ConfigError(f"generation={generation}: out of range; allowed: 0 .. {gens - 1}")
    return metric or metrics[0], g, size or sizes[0]


def scaling_table(results: Results, generation: int | None = None, size: str | None = None,
                  resamples: int = RESAMPLES, seed: int = SEED) -> pd.DataFrame:
    """The tidy analysis of every metric (columns: ``regime``, the swept fields, ``COLUMNS``)."""
    _, g, size = _choose(results, None, generation, size)
    rows = []
    for key, by_regime in metric_blocks(results).items():
        facet = facet_values(results, key)
        for regime, blocks in by_regime.items():
            names = QUANTITIES + (PLATEAU_QUANTITIES if regime != "replace" else ())
            for metric in model_metrics(results):
                stats, used = bootstrap(blocks[metric], g, resamples, seed,
                                        plateau=regime != "replace")
                curve = results.theory_curve(regime, metric, facet)
                theory = (curve_stats(np.asarray(curve, np.float64)[None], g)
                          if curve is not None else {})
                for q in names:
                    est, lo, hi = stats[q]
                    rows.append({"regime": regime, **facet, "size_field": size, "metric": metric,
                                 "generation": g, "quantity": q, "estimate": est, "ci_low": lo,
                                 "ci_high": hi, "n_chains": used,
                                 "theory": float(theory[q][0]) if q in theory else np.nan})
    return pd.DataFrame(rows, columns=["regime", *results.swept, *COLUMNS])


def analyze(results: Results, out_dir: str | Path, metric: str | None = None,
            generation: int | None = None, size: str | None = None) -> list[Path]:
    """Write ``scaling.csv`` (every metric) and ``scaling.png`` (``metric``, default the model's
    first) into ``out_dir``; return their paths. Raises ``ConfigError`` for a run without a
    swept size, an unknown metric or size, or a generation out of range."""
    metric, g, size = _choose(results, metric, generation, size)
    table = scaling_table(results, g, size)
    out = Path(out_dir)
    write_text(out / "scaling.csv", table.to_csv(index=False, float_format="%.6g"))
    png = plot_scaling(table, out / "scaling.png", metric, size,
                       title=f"{results.experiment.name}: {metric} at generation {g} "
                             f"(mean, {CI:.0%} bootstrap CI over seeds)")
    return [out / "scaling.csv", png]


def experiment_from_record(record: dict[str, Any]) -> Experiment:
    """The ``Experiment`` of a ``config.json`` ``experiment`` entry (JSON lists back to tuples).

    >>> e = Experiment(name="x", model="gaussian", n=(8, 16), hparams={"sigma": (1.0, 2.0)})
    >>> experiment_from_record(json.loads(json.dumps(e.to_dict()))) == e
    True
    """
    def tuples(v):
        if isinstance(v, list):
            return tuple(tuples(x) for x in v)
        return {k: tuples(x) for k, x in v.items()} if isinstance(v, dict) else v

    names = {f.name for f in dataclasses.fields(Experiment)}
    return Experiment(**{k: tuples(v) for k, v in record.items() if k in names})


def load_run(out_dir: str | Path) -> Results:
    """The ``Results`` of a finished run directory (its ``config.json`` and ``metrics/``
    dataset; no timing, no samples). Raises ``ConfigError`` naming what is missing."""
    out = Path(out_dir)
    if not out.is_dir():
        raise ConfigError(f"DIR={str(out)!r}: no such directory")
    try:
        record = json.loads((out / "config.json").read_text())["experiment"]
    except (OSError, ValueError, KeyError):
        raise ConfigError(f"DIR={str(out)!r}: no readable config.json; not a run directory "
                          f"(collapse-jax run --out DIR writes one)") from None
    spec = resolve(experiment_from_record(record))
    cols = load_columns(sorted((out / PARTS).glob("*.parquet")))
    try:
        check_complete(spec, cols)
    except RuntimeError as e:
        raise ConfigError(f"DIR={str(out)!r}: the run is not finished ({e})") from None
    table = build_table(spec, cols)
    return Results(table, spec, [], metric_names(spec, table))


def main(out_dir: str, metric: str | None, generation: int | None, size: str | None) -> int:
    """``collapse-jax analyze``: analyze a run directory, print the value and growth rows."""
    results = load_run(out_dir)
    paths = analyze(results, out_dir, metric, generation, size)
    table = pd.read_csv(paths[0])
    metric = metric or model_metrics(results)[0]
    shown = table[(table["metric"] == metric)].drop(columns=["metric", "size_field"])
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"-> {paths[0]}, {paths[1]}")
    return 0
