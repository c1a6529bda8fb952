"""Figures from ``Results`` only: each metric vs generation, one line per regime (mean over seeds,
interquartile band), one panel per swept value, closed-form theory overlaid as dashed lines; and
the model family's rendering of the samples the run kept. PNG via matplotlib (Agg).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from collapse_jax.files import atomic_path  # noqa: E402
from collapse_jax.results import Results, chain_generations  # noqa: E402
from collapse_jax.tables import as_slice  # noqa: E402

_COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def metric_blocks(results: Results) -> dict[tuple, dict[str, dict[str, np.ndarray]]]:
    """Each facet's (swept values') chains as arrays: ``{facet: {regime: {metric: [chains,
    generations]}}}``, facets sorted, regimes in table order.

    The table holds each chain's generations as consecutive rows, so a facet's column is reshaped,
    not pivoted (a pivot is used only for a table in another order). Computed once per table
    (kept in ``results.derived``; the arrays are read-only by convention).
    """
    cached = results.derived.get("metric_blocks")  # plot_all and the scaling analysis share it
    if cached is not None and cached[0] is results.table:
        return cached[1]
    t = results.table
    gens = results.experiment.generations
    keys = ["regime", *results.swept]
    out: dict[tuple, dict[str, dict[str, np.ndarray]]] = {}
    if chain_generations(t) == gens:
        # group the chains (one row each), not the rows: a 9M-row table has 90k chains
        chains = t[keys].iloc[::gens].reset_index(drop=True)
        values = {m: t[m].to_numpy().reshape(-1, gens) for m in results.metrics}
        found = chains.groupby(keys, sort=False).indices
        for key, idx in sorted(found.items(), key=lambda kv: kv[1][0]):  # in table order
            key = key if isinstance(key, tuple) else (key,)
            rows = as_slice(idx)
            out.setdefault(tuple(key[1:]), {})[key[0]] = {
                m: v[rows].astype(np.float64) for m, v in values.items()}
    else:
        for key, sub in t.groupby(keys, sort=False):
            key = key if isinstance(key, tuple) else (key,)
            out.setdefault(tuple(key[1:]), {})[key[0]] = {
                m: sub.pivot_table(index="seed", columns="generation", values=m)
                .to_numpy(np.float64) for m in results.metrics}
    out = {k: out[k] for k in sorted(out)}
    results.derived["metric_blocks"] = (t, out)
    return out


def facet_values(results: Results, key: tuple) -> dict[str, Any]:
    """A facet's swept values as the user wrote them in the experiment (the table holds float32
    copies of swept hyperparameters: 0.1 would print as 0.10000000149011612)."""
    out = {}
    for name, v in zip(results.swept, key, strict=True):
        written = results.spec.swept.get(name, ())
        match = [w for w in written if np.float32(w) == np.float32(v)]
        out[name] = match[0] if match else v
    return out


def fixed_layout(fig, nrows: int, ncols: int, title_lines: int) -> None:
    """Margins in inches for a grid of panels under a ``title_lines``-line suptitle: room for
    tick labels, axis labels and panel titles without ``tight_layout``, which measures every
    tick label (most of a figure's drawing time with log axes)."""
    width, height = fig.get_size_inches()
    left, right, bottom, gap_w, gap_h = 0.85, 0.2, 0.5, 0.9, 0.75
    top = 0.3 + 0.2 * title_lines
    ax_w = (width - left - right - (ncols - 1) * gap_w) / ncols
    ax_h = (height - top - bottom - (nrows - 1) * gap_h) / nrows
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=gap_w / ax_w, hspace=gap_h / ax_h)


def metric_figure(results: Results, metric: str, blocks: dict | None = None):
    """The matplotlib figure of ``metric``: a panel per swept-value combination, a line per
    regime (the mean over chains) with a band holding the middle half of the chains (25th to
    75th percentile), and the closed form dashed where one exists (``blocks``: a precomputed
    ``metric_blocks(results)``). The caller closes it (``plot_metric`` saves it as a PNG)."""
    blocks = metric_blocks(results) if blocks is None else blocks
    facets = list(blocks.items())
    ncols = min(len(facets), 3)
    nrows = -(-len(facets) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows + 0.6), squeeze=False, sharex=True
    )
    regimes = list(dict.fromkeys(r for _, by_regime in facets for r in by_regime))
    theory_drawn = False
    for ax, (key, by_regime) in zip(axes.flat, facets, strict=False):
        facet = facet_values(results, key)
        positive = True
        vals = []
        for r_i, regime in enumerate(regimes):
            if regime not in by_regime:
                continue
            v = by_regime[regime][metric].T  # [generations, chains]
            g = np.arange(v.shape[0])
            color = _COLORS[r_i % len(_COLORS)]
            with np.errstate(invalid="ignore", over="ignore"):
                mean = np.nanmean(v, axis=1)
                # nanpercentile loops over the generations in Python (apply_along_axis): only
                # where a NaN needs it
                quantiles = np.nanpercentile if np.isnan(v).any() else np.percentile
                lo, hi = quantiles(v, [25, 75], axis=1)
            ax.plot(g, mean, color=color, lw=1.8)
            ax.fill_between(g, lo, hi, color=color, alpha=0.2, lw=0)
            finite = v[np.isfinite(v)]
            positive &= bool(np.all(finite > 0))
            vals.append(finite)
            curve = results.theory_curve(regime, metric, facet)
            if curve is not None:
                theory_drawn = True
                ax.plot(np.arange(len(curve)), curve, color=color, ls="--", lw=1.2)
        vals = np.concatenate(vals) if vals else np.zeros(0)
        if positive and vals.size and vals.max() / max(vals.min(), 1e-300) > 100:
            ax.set_yscale("log")
        title = ", ".join(f"{k}={v}" for k, v in facet.items())
        # a fixed y: matplotlib otherwise measures every tick label to keep the title clear of
        # top ticks these panels do not have (same pixels; a sixth less drawing time)
        ax.set_title(title or results.experiment.name, fontsize=10, y=1.0)
        ax.set_xlabel("generation")
        ax.set_ylabel(metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(facets):]:
        ax.set_visible(False)
    seeds = results.experiment.seeds
    handles = [Line2D([], [], color=_COLORS[i % len(_COLORS)], lw=1.8, label=r)
               for i, r in enumerate(regimes)]
    handles.append(Patch(color="0.5", alpha=0.3,
                         label=f"mean over {seeds} seeds; band: middle 50% of chains"))
    if theory_drawn:
        handles.append(Line2D([], [], color="0.2", ls="--", lw=1.2, label="closed form"))
    axes.flat[0].legend(handles=handles, fontsize=7)
    title = textwrap.wrap(f"{results.experiment.name}: {metric}", width=int(40 * ncols))
    fig.suptitle("\n".join(title), fontsize=10)
    fixed_layout(fig, nrows, ncols, len(title))
    return fig


def plot_metric(results: Results, metric: str, path: str | os.PathLike,
                blocks: dict | None = None) -> Path:
    """One PNG for ``metric`` (``metric_figure``) at ``path``, written atomically."""
    fig = metric_figure(results, metric, blocks)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_all(results: Results, out_dir: str | os.PathLike) -> list[Path]:
    """A PNG per metric in ``out_dir`` (``<metric>.png``), and the model family's own rendering
    of the samples the run kept (``ModelSpec.render``: e.g. the VAE's ``samples.png``)."""
    out = Path(out_dir)
    blocks = metric_blocks(results)
    paths = [plot_metric(results, m, out / f"{m}.png", blocks) for m in results.metrics]
    samples = results.regime_samples()
    render = results.spec.spec.render
    if samples and render is not None:
        first = next(s for s in results.spec.statics if s.regime == next(iter(samples)))
        paths.extend(render(samples, first, out))
    return paths
