"""What a reproduction study is: a config with overrides, and how its table is checked and drawn.

A ``Study`` names a config of ``configs/`` and the ``--set`` overrides that make it (full size,
plus the extra overrides of ``--quick``), and an ``analyze(table, experiment)`` function that
returns its ``Check``s (a simulated estimate against a reference, see ``verdict.py``) and its
``Curve``s (a centre line with an uncertainty band over generations, and the closed form where
one exists). The helpers here turn a results table into per-seed arrays and curves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from collapse_jax.reproduce.verdict import Estimate, median_ci

#: What the band of a mean curve is (said in every figure caption).
MEAN_BAND = "95% CI of the mean over seeds (mean +- 1.96 s.e.)"
#: What the band of a median curve is.
MEDIAN_BAND = "95% order-statistic CI of the median over seeds"


class Check(NamedTuple):
    """One checked number: ``estimate`` (simulated) against ``reference`` from ``source``.

    ``mode`` and ``rel_tol`` as in ``verdict.judge``; ``expect`` the verdict the study expects
    (``"DIFFERS"`` for a deliberately contrasted formula, e.g. an asymptotic one at small T).
    """

    label: str
    estimate: Estimate
    reference: float
    source: str
    mode: str = "equal"
    rel_tol: float = 0.0
    expect: str = "PASS"


class Curve(NamedTuple):
    """A line of a study's figure: ``center`` over ``generation`` with the band ``[lo, hi]``
    (``band`` says what it is), the closed form ``theory`` (or None), in panel ``panel``."""

    panel: str
    label: str
    generation: np.ndarray
    center: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    band: str
    theory: np.ndarray | None = None
    log: bool = False


class Study(NamedTuple):
    """A curated reproduction (see the module docstring).

    Attributes:
        name: the ``--only`` name and the run directory's name.
        title: one line: what is reproduced.
        source: the paper(s), figure or theorem.
        config: a config name of ``configs/``.
        sets: ``--set`` overrides of the full study.
        quick: further overrides under ``--quick`` (smaller seeds / generations).
        analyze: ``(table, experiment) -> (checks, curves)``.
        neural: a neural study (skipped under ``--quick``).
        note: what the reader should know (setting, indexing, approximations).
    """

    name: str
    title: str
    source: str
    config: str
    sets: tuple[str, ...]
    quick: tuple[str, ...]
    analyze: Callable[[pd.DataFrame, Any], tuple[list[Check], list[Curve]]]
    neural: bool = False
    note: str = ""


def select(table: pd.DataFrame, **where) -> pd.DataFrame:
    """Rows of ``table`` whose columns equal the given values (floats compared with isclose)."""
    mask = np.ones(len(table), bool)
    for key, value in where.items():
        col = table[key]
        if isinstance(value, float):
            mask &= np.isclose(col.to_numpy(np.float64), value)
        else:
            mask &= (col.astype(str) == str(value)).to_numpy()
    return table[mask]


def per_seed(table: pd.DataFrame, metric: str, **where) -> np.ndarray:
    """``[seeds, generations]`` values of ``metric`` for the rows matching ``where``.

    >>> t = pd.DataFrame({"seed": [0, 0, 1, 1], "generation": [0, 1, 0, 1],
    ...                   "m": [1.0, 2.0, 3.0, 4.0]})
    >>> per_seed(t, "m").tolist()
    [[1.0, 2.0], [3.0, 4.0]]
    """
    rows = select(table, **where)
    wide = rows.pivot_table(index="seed", columns="generation", values=metric, observed=True)
    return wide.sort_index(axis=1).to_numpy(np.float64)


def mean_curve(values: np.ndarray, panel: str, label: str, theory=None, log=False) -> Curve:
    """Mean over seeds (rows of ``values``) with its 95% CI band."""
    m = np.nanmean(values, axis=0)
    se = np.nanstd(values, axis=0, ddof=1) / np.sqrt(np.sum(np.isfinite(values), axis=0))
    g = np.arange(values.shape[1])
    return Curve(panel, label, g, m, m - 1.96 * se, m + 1.96 * se, MEAN_BAND, theory, log)


def median_curve(values: np.ndarray, panel: str, label: str, theory=None, log=False) -> Curve:
    """Median over seeds with its 95% order-statistic band."""
    cols = [median_ci(values[:, j]) for j in range(values.shape[1])]
    med, lo, hi = (np.array(c) for c in zip(*cols, strict=True))
    return Curve(panel, label, np.arange(values.shape[1]), med, lo, hi, MEDIAN_BAND, theory, log)


def sets_value(sets: tuple[str, ...], key: str) -> str | None:
    """The last value ``--set key=...`` gives in ``sets`` (None if it is not set)."""
    found = None
    for item in sets:
        k, _, v = item.partition("=")
        if k.strip() == key:
            found = v.strip()
    return found
