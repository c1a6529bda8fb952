"""The results table as columns (``collapse_jax.tables``): parts of the Parquet dataset round
trip, ordering, string columns, CSV and Parquet."""

from __future__ import annotations

import numpy as np
import pandas as pd

from collapse_jax import tables


def _part(group, chains, gen_start, gens, rng):
    rows = len(chains) * gens
    return {
        "_group": np.full(rows, group, np.int64),
        "_chain": np.repeat(np.asarray(chains, np.int64), gens),
        "seed": np.repeat(np.asarray(chains, np.int32), gens),
        "generation": np.tile(np.arange(gen_start, gen_start + gens, dtype=np.int32),
                              len(chains)),
        "metric": rng.standard_normal(rows).astype(np.float32),
        "flag": rng.random(rows) < 0.5,
    }


def test_parts_round_trip_exactly_and_merge_in_chain_generation_order(tmp_path):
    rng = np.random.default_rng(0)
    # generation chunks of two chain chunks, written out of row order (as a run does)
    parts = [_part(0, [0, 1], 0, 1, rng), _part(0, [0, 1], 1, 3, rng),
             _part(0, [2], 0, 1, rng), _part(0, [2], 1, 3, rng), _part(1, [0, 1, 2], 0, 4, rng)]
    paths = []
    for i, p in enumerate(parts):
        paths.append(tmp_path / f"p{i}.parquet")
        tables.write_part(paths[-1], p, {"regime": "replace"})
    cols = tables.load_columns(paths[::-1])
    keys = np.stack([cols[k] for k in tables.SORT_COLUMNS], axis=1)
    assert len(keys) == 2 * 3 * 4 and len(np.unique(keys, axis=0)) == len(keys)
    order = np.lexsort(keys.T[::-1])
    assert np.array_equal(order, np.arange(len(keys)))  # sorted
    for k, v in parts[0].items():
        assert cols[k].dtype == v.dtype, k
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    ref = tables.sort_columns(merged)
    for k in cols:
        assert np.array_equal(cols[k], ref[k]), k  # every value, bit for bit
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
    assert tables.load_columns([]) == {}
    # the parts are one typed dataset: text columns categorical, numbers with their dtypes
    ds = pd.read_parquet(tmp_path)
    assert len(ds) == len(keys) and isinstance(ds["regime"].dtype, pd.CategoricalDtype)
    assert ds["metric"].dtype == np.float32 and ds["seed"].dtype == np.int32
    assert ds["flag"].dtype == bool


def test_sort_columns_leaves_sorted_rows_alone_and_sorts_the_rest():
    rng = np.random.default_rng(1)
    p = _part(0, [0, 1, 2], 0, 5, rng)
    assert tables.sort_columns(p) is p
    perm = rng.permutation(len(p["_chain"]))
    shuffled = {k: v[perm] for k, v in p.items()}
    back = tables.sort_columns(shuffled)
    for k in p:
        assert np.array_equal(back[k], p[k]), k



def test_sort_columns_agrees_with_a_lexsort_on_full_grids_and_on_partial_or_duplicated_rows():
    # a complete run is a full (group, chain, generation) grid, sorted by a scatter; a missing,
    # duplicated or negative key must take the general path and give the same order
    rng = np.random.default_rng(2)
    g, c, t = np.meshgrid(np.arange(3), np.arange(4), np.arange(5), indexing="ij")
    grid = {"_group": g.ravel(), "_chain": c.ravel(), "generation": t.ravel().astype(np.int32)}
    cases = {"full": np.arange(60), "missing": np.arange(1, 60),
             "duplicated": np.concatenate([np.arange(59), [3]]),
             "sparse chains": np.flatnonzero(grid["_chain"] != 1)}
    for name, rows in cases.items():
        rows = rng.permutation(rows)
        cols = {k: v[rows] for k, v in grid.items()} | {"row": rows}
        want = np.lexsort([cols[k] for k in tables.SORT_COLUMNS][::-1], axis=0)
        got = tables.sort_columns(cols)
        for k in cols:
            assert np.array_equal(got[k], cols[k][want]), (name, k)
def test_text_column_is_categorical_like_the_datasets():
    """The table's text columns have the dtype the Parquet dataset's read back with: one code
    per row over the distinct names (a name listed twice is one category)."""
    codes = np.array([0, 1, 1, 0, 2], np.int64)
    s = tables.strings(["replace", "accumulate", "replace"], codes)
    assert s.tolist() == ["replace", "accumulate", "accumulate", "replace", "replace"]
    assert isinstance(s.dtype, pd.CategoricalDtype)
    assert list(s.cat.categories) == ["replace", "accumulate"] and s.cat.codes.dtype == np.int8


def test_csv_and_parquet_read_back_to_the_same_values(tmp_path):
    rng = np.random.default_rng(2)
    n = 1000
    t = tables.frame({
        "experiment": tables.strings(["exp, with comma"], np.zeros(n, np.int32)),
        "seed": np.arange(n, dtype=np.int32),
        "x": np.concatenate([rng.standard_normal(n - 3), [np.nan, np.inf, -np.inf]])
        .astype(np.float32) * np.float32(1e-20),
        "y": rng.standard_normal(n),
        "flag": rng.random(n) < 0.3,
    })
    tables.write_csv(t, tmp_path / "t.csv")
    text = (tmp_path / "t.csv").read_text().splitlines()
    assert text[0] == "experiment,seed,x,y,flag"
    back = pd.read_csv(tmp_path / "t.csv")
    assert back["experiment"].eq("exp, with comma").all()
    assert back["flag"].dtype == bool and np.array_equal(back["flag"], t["flag"])
    # float32 values print in a form that parses back to the same float32 (NaN, inf included)
    np.testing.assert_array_equal(back["x"].to_numpy(np.float32), t["x"].to_numpy())
    np.testing.assert_array_equal(back["y"].to_numpy(), t["y"].to_numpy())
    tables.write_parquet(t, tmp_path / "t.parquet")
    pq = pd.read_parquet(tmp_path / "t.parquet")
    assert (pq.dtypes == t.dtypes).all()
    pd.testing.assert_frame_equal(pq, t)


def test_a_full_grid_of_parts_is_placed_without_sorting_and_the_rest_falls_back(monkeypatch):
    rng = np.random.default_rng(2)
    grid = [_part(1, [0, 2], 0, 2, rng), _part(0, [0, 1, 2], 0, 5, rng), _part(1, [1], 0, 5, rng),
            _part(1, [0, 2], 2, 3, rng)]
    ref = tables.sort_columns({k: np.concatenate([p[k] for p in grid]) for k in grid[0]})
    with monkeypatch.context() as m:  # a finished run's parts: placed, never sorted
        m.setattr(tables, "sort_columns", lambda cols: 1 / 0)
        placed = tables.load_columns([], held={})  # nothing: empty
        assert placed == {}
        held = {f"p{i}": p for i, p in enumerate(grid)}
        placed = tables.load_columns(list(held), held=held)
    assert set(placed) == set(ref)
    for k in ref:
        assert placed[k].dtype == ref[k].dtype and np.array_equal(placed[k], ref[k]), k
    # not a grid: a missing block, a block twice, a block with a gap in its generations
    twice = grid + [grid[2]]
    gap = [*grid[:3], {k: np.delete(v, [0, 3]) for k, v in grid[3].items()}]
    for parts in (grid[1:], twice, gap):
        held = {f"p{i}": p for i, p in enumerate(parts)}
        cols = tables.load_columns(list(held), held=held)
        merged = tables.sort_columns({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
        for k in merged:
            assert np.array_equal(cols[k], merged[k]), k
