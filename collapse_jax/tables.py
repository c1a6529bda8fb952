"""The results table as columns: building it from numpy arrays, parts on disk, CSV and Parquet.

A run's rows are produced as a dict of numpy columns per (group, chain chunk, generation chunk).
Each such part is written as it finishes, atomically, as one Parquet file (``write_part``) of
the run's table dataset: typed columns (int32 seeds and generations, float32 metrics, bool flags,
and the text columns experiment / model / regime dictionary-encoded, which pandas reads as
categoricals), so the folder reads at once with pandas, pyarrow, polars or DuckDB and nothing
is rewritten at the end. ``load_columns`` reads parts back as the exact numeric arrays (resume,
the final table). Nothing here creates a Python object per row, and the CSV is written with
Arrow's writer rather than ``DataFrame.to_csv`` (float32 values print in their shortest
round-trip form).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from collapse_jax.files import atomic_path

#: Columns every part and table sort by: group, chain position, generation.
SORT_COLUMNS = ("_group", "_chain", "generation")


def save_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write named numpy ``arrays`` to ``path`` (``.npz``) atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})


def write_part(path: str | os.PathLike, columns: Mapping[str, np.ndarray],
               labels: Mapping[str, str] | None = None) -> None:
    """Write one part of a table dataset to ``path`` (Parquet) atomically: the text ``labels``
    (the same value on every row, e.g. ``{"regime": "replace"}``) as dictionary-encoded columns
    first, then the numeric ``columns`` (equal lengths) with their dtypes."""
    rows = len(next(iter(columns.values()))) if columns else 0
    fields = {k: pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, np.int32)),
                                                pa.array([v], pa.string()))
              for k, v in (labels or {}).items()}
    fields.update((k, pa.array(np.asarray(v))) for k, v in columns.items())
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(fields), tmp)


def read_part(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The numeric columns of one part (``write_part``) as the exact arrays written; the text
    columns are left out (they follow from ``_group``)."""
    t = pq.read_table(path)
    return {name: t.column(name).to_numpy() for name in t.column_names
            if not pa.types.is_dictionary(t.schema.field(name).type)}


def load_columns(paths: Sequence[str | os.PathLike],
                 held: Mapping[str, Mapping[str, np.ndarray]] | None = None
                 ) -> dict[str, np.ndarray]:
    """The numeric columns of the parts at ``paths`` (``read_part``), concatenated and sorted by
    ``SORT_COLUMNS``. ``held`` maps a part's file name to the columns it was written from, still
    in memory: those are not read back.

    Returns an empty dict when there are no rows.
    """
    held = held or {}
    parts = []
    for p in paths:
        name = os.path.basename(p)
        part = held[name] if name in held else read_part(p)
        if part and len(next(iter(part.values()))):
            parts.append(part)
    if not parts:
        return {}
    placed = _place_blocks(parts)
    if placed is not None:
        return placed
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return sort_columns(cols)


def as_slice(idx: np.ndarray) -> slice | np.ndarray:
    """Integer positions ``idx`` as a slice when they are consecutive and increasing (a basic
    index: no copy on reading, a plain copy on writing), else unchanged.

    >>> as_slice(np.array([3, 4, 5])), as_slice(np.array([3, 5])).tolist()
    (slice(3, 6, None), [3, 5])
    """
    if len(idx) and np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def _block(part: Mapping[str, np.ndarray]) -> tuple[int, np.ndarray, int, int] | None:
    """``(group, chains, first generation, generations)`` of a part whose rows are whole chains
    of consecutive generations, chain-major (as a run writes them), else None."""
    group, chain, gen = (np.asarray(part[k]) for k in SORT_COLUMNS)
    first = int(gen[0])
    width = int(gen.max()) - first + 1
    if len(gen) % width or not np.all(group == group[0]):
        return None
    chain, gen = chain.reshape(-1, width), gen.reshape(-1, width)
    if not (np.all(gen == np.arange(first, first + width)) and np.all(chain == chain[:, :1])):
        return None
    return int(group[0]), chain[:, 0].astype(np.int64), first, width


def _place_blocks(parts: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray] | None:
    """The parts' rows in ``SORT_COLUMNS`` order, each part copied once into its place, when
    together they cover every (group, chain, generation) of a full grid exactly once (a
    finished run); else None. Concatenating then sorting a 10,000-seed sweep's 9M rows took
    ~2.8 s, this a fraction of it."""
    blocks = [_block(p) for p in parts]
    if any(b is None for b in blocks) or any(set(p) != set(parts[0]) for p in parts):
        return None
    groups = max(b[0] for b in blocks) + 1
    chains = max(int(b[1].max()) for b in blocks) + 1
    gens = max(b[2] + b[3] for b in blocks)
    if min(min(b[0], int(b[1].min()), b[2]) for b in blocks) < 0 or \
            sum(len(b[1]) * b[3] for b in blocks) != groups * chains * gens:
        return None
    # each block's destination rows (a slice where its chains are consecutive)
    rows = [as_slice(group * chains + ids) for group, ids, _, _ in blocks]
    seen = np.zeros((groups * chains, gens), np.int8)
    for at, (_, _, first, width) in zip(rows, blocks, strict=True):
        seen[at, first:first + width] += 1
    if not np.all(seen == 1):
        return None
    out = {k: np.empty(groups * chains * gens, np.asarray(v).dtype) for k, v in parts[0].items()}
    for part, at, (_, _, first, width) in zip(parts, rows, blocks, strict=True):
        for k, v in part.items():
            out[k].reshape(-1, gens)[at, first:first + width] = np.asarray(v).reshape(-1, width)
    return out


def sort_columns(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rows ordered by ``SORT_COLUMNS`` (stable); unchanged when already in order.

    A complete run's keys are every (group, chain, generation) exactly once, so its order is
    a scatter of the row numbers by the keys' mixed-radix code, O(rows) (a lexsort of a
    10,000-seed sweep's 9M rows took 3 s); other rows (a part of a run) fall back to a lexsort.

    >>> c = {"_group": np.array([1, 0, 0, 1]), "_chain": np.array([0, 0, 0, 0]),
    ...      "generation": np.array([0, 1, 0, 1]), "x": np.array([2, 1, 0, 3])}
    >>> sort_columns(c)["x"].tolist()
    [0, 1, 2, 3]
    """
    keys = [cols[k] for k in SORT_COLUMNS if k in cols]
    rows = len(keys[0]) if keys else 0
    if rows < 2:
        return cols
    order = _dense_order(keys, rows)
    if order is None:
        stacked = np.stack([k.astype(np.int64) for k in keys], axis=1)
        diff = np.diff(stacked, axis=0)
        # lexicographic order holds when each step's first nonzero difference is positive
        first = np.argmax(diff != 0, axis=1)
        if np.all(diff[np.arange(len(diff)), first] >= 0):
            return cols
        order = np.lexsort(keys[::-1])
    elif np.array_equal(order, np.arange(rows)):
        return cols
    return {k: v[order] for k, v in cols.items()}


def _dense_order(keys: list[np.ndarray], rows: int) -> np.ndarray | None:
    """The sorting permutation when the keys are a full grid (every combination of ``0 ..
    max`` of each key exactly once), else None."""
    lows = [int(k.min()) for k in keys]
    sizes = [int(k.max()) + 1 for k in keys]
    if min(lows) < 0 or int(np.prod(sizes, dtype=np.float64)) != rows:
        return None
    code = np.zeros(rows, np.int64)
    for k, size in zip(keys, sizes, strict=True):
        code *= size
        code += k
    if not np.all(np.bincount(code, minlength=rows) == 1):
        return None
    order = np.empty(rows, np.int64)
    order[code] = np.arange(rows)
    return order


def strings(names: Sequence[str], codes: np.ndarray) -> pd.Series:
    """A text column ``names[codes]`` as a pandas categorical (the dtype the Parquet dataset's
    dictionary-encoded text columns read back as): one small integer per row, where Python or
    Arrow strings took ~30 bytes per row (a 9M-row table's three text columns: 1.2-1.7 s to
    build, mostly first touches of fresh memory).

    >>> strings(["replace", "accumulate", "replace"], np.array([2, 1, 0])).tolist()
    ['replace', 'accumulate', 'replace']
    """
    unique = list(dict.fromkeys(names))
    to_unique = np.asarray([unique.index(v) for v in names], np.int8 if len(unique) < 128
                           else np.int32)
    return pd.Series(pd.Categorical.from_codes(to_unique[np.asarray(codes)], unique))


def frame(columns: Mapping[str, np.ndarray | pd.Series]) -> pd.DataFrame:
    """A DataFrame from equal-length columns, in the given order (no copies of numeric arrays
    beyond pandas' own)."""
    return pd.DataFrame({k: (v.reset_index(drop=True) if isinstance(v, pd.Series) else v)
                         for k, v in columns.items()}, copy=False)


def write_csv(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``table`` as CSV atomically with Arrow's writer (no index; quotes only where
    needed; booleans as ``true``/``false``, which ``pandas.read_csv`` reads back as bool)."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    header = ",".join(_csv_field(str(c)) for c in table.columns) + "\n"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header.encode())
        pa_csv.write_csv(arrow, f, pa_csv.WriteOptions(include_header=False,
                                                       quoting_style="needed"))


def _csv_field(text: str) -> str:
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_parquet(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``table`` as Parquet atomically (exact dtypes; the fast way to load a big run)."""
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


__all__ = ["as_slice", "frame", "load_columns", "read_part", "save_arrays", "sort_columns",
           "strings", "write_csv", "write_parquet", "write_part"]
