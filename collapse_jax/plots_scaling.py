"""The scaling figure: a metric at one generation against data volume, on log-log axes.

Drawn from the tidy table of ``analyze.scaling_table`` only (rows with ``quantity == "value"``):
a panel per combination of the other swept fields, a line per regime through the chain means
with their bootstrap intervals as error bars, and the closed form (the table's ``theory``) dashed
in the regime's colour where one exists. Both axes are logarithmic; a panel with a value that is
not positive (e.g. a log-determinant ratio) gets a symmetric-log y axis instead.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from collapse_jax.files import atomic_path  # noqa: E402

_COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
#: Columns of the scaling table that are not swept fields.
_NOT_SWEPT = ("regime", "size_field", "metric", "generation", "quantity", "estimate", "ci_low",
              "ci_high", "n_chains", "theory")


def plot_scaling(table: pd.DataFrame, path: str | os.PathLike, metric: str, size: str,
                 title: str = "") -> Path:
    """Write ``scaling_figure`` as a PNG to ``path`` (atomically) and return the path.

    >>> import tempfile
    >>> t = pd.DataFrame({"regime": ["replace"] * 2, "n": [10, 100], "size_field": "n",
    ...                   "metric": "m", "generation": 3, "quantity": "value",
    ...                   "estimate": [1.0, 0.1], "ci_low": [0.9, 0.09], "ci_high": [1.1, 0.11],
    ...                   "n_chains": 8, "theory": [1.0, 0.1]})
    >>> plot_scaling(t, Path(tempfile.mkdtemp()) / "s.png", "m", "n").read_bytes()[:4]
    b'\\x89PNG'
    """
    fig = scaling_figure(table, metric, size, title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def scaling_figure(table: pd.DataFrame, metric: str, size: str, title: str = ""):
    """The matplotlib figure of ``metric`` (its ``value`` rows) against the swept ``size``:
    log-log axes, a panel per combination of the other swept fields."""
    rows = table[(table["metric"] == metric) & (table["quantity"] == "value")]
    others = [c for c in table.columns if c not in _NOT_SWEPT and c != size]
    panels = list(rows.groupby(others, sort=True)) if others else [((), rows)]
    regimes = list(dict.fromkeys(rows["regime"]))
    ncols = min(len(panels), 3)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.8 * nrows + 0.6),
                             squeeze=False)
    theory_drawn = False
    for ax, (key, sub) in zip(axes.flat, panels, strict=False):
        est = sub["estimate"].to_numpy(np.float64)
        positive = bool(np.all(est[np.isfinite(est)] > 0))
        for i, regime in enumerate(regimes):
            r = sub[sub["regime"] == regime].sort_values(size)
            x = r[size].to_numpy(np.float64)
            y, lo, hi = (r[c].to_numpy(np.float64) for c in ("estimate", "ci_low", "ci_high"))
            ok = (x > 0) & np.isfinite(y) & ((y > 0) | (not positive))
            color = _COLORS[i % len(_COLORS)]
            err = np.stack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])[:, ok]
            ax.errorbar(x[ok], y[ok], yerr=np.nan_to_num(err), color=color, marker="o", ms=4,
                        lw=1.6, capsize=3, label=regime)
            th = r["theory"].to_numpy(np.float64)
            good = (x > 0) & np.isfinite(th) & ((th > 0) | (not positive))
            if good.any():
                theory_drawn = True
                ax.plot(x[good], th[good], color=color, ls="--", lw=1.2)
        ax.set_xscale("log")
        ax.set_yscale("log" if positive else "symlog")
        ax.set_xlabel(f"{size} (data volume)")
        ax.set_ylabel(metric)
        key = key if isinstance(key, tuple) else (key,)
        ax.set_title(", ".join(f"{k}={v}" for k, v in zip(others, key, strict=True)),
                     fontsize=9)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=_COLORS[i % len(_COLORS)], marker="o", lw=1.6, label=r)
               for i, r in enumerate(regimes)]
    if theory_drawn:
        handles.append(Line2D([], [], color="0.2", ls="--", lw=1.2, label="closed form"))
    axes.flat[0].legend(handles=handles, fontsize=7)
    if title:
        fig.suptitle("\n".join(textwrap.wrap(title, width=int(55 * ncols))), fontsize=9)
    fig.tight_layout()
    return fig
