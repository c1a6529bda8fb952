"""Results (``collapse_jax.results``): ``summary.json`` and the CLI's report count the chains that
hit each flag (``collapsed``, ``nonfinite``); ``metrics.csv`` holds the flags as booleans.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import collapse_jax as cj
from collapse_jax.validate import statics


def _run(**kw):
    exp = cj.Experiment(name="degenerate", **{"n_test": 16, **kw})
    r = cj.run_experiment(exp)
    t = r.table
    assert len(t) == len(statics(exp)) * exp.seeds * len(
        exp.hparam_grid(cj.MODELS[exp.model].hparams)) * exp.generations
    assert t["collapsed"].dtype == bool and t["nonfinite"].dtype == bool
    return r, t


@pytest.fixture(scope="module")
def gaussian_extremes():
    """One compile: n = 3 points in d = 6 (singular covariances), sigma in {2, 1e25} x scale in
    {0, 1}, 2 seeds each."""
    return _run(model="gaussian", regimes=("replace",), seeds=2, generations=5, n=3, d=6,
                hparams={"scale": (0.0, 1.0), "sigma": (2.0, 1e25)})


def test_summary_json_and_cli_report_flag_counts(gaussian_extremes, tmp_path):
    from collapse_jax.cli import format_flags
    from collapse_jax.results import write_results

    r, _ = gaussian_extremes
    assert format_flags(r) == (
        "flags (chains of 8 that hit each at any generation): collapsed 2, nonfinite 4 "
        "(replace: collapsed 2, nonfinite 4)")
    write_results(r, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["complete"] is True
    assert summary["flags"]["collapsed"] == 2 and summary["flags"]["nonfinite"] == 4
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert table["collapsed"].dtype == bool and len(table) == 8 * 5
    assert "collapsed" not in r.metrics and "nonfinite" not in r.metrics  # not plotted


def test_check_complete_names_missing_and_repeated_rows():
    from collapse_jax.results import check_complete, columns
    from collapse_jax.tables import sort_columns
    from collapse_jax.validate import resolve

    spec = resolve(cj.Experiment(name="cc", model="gaussian", regimes=("replace", "accumulate"),
                                 seeds=3, generations=4, n=8, d=2, n_test=8))
    parts = [columns(spec, g, {"trace_ratio": np.ones((3, 4), np.float32)}, np.arange(3), 0)
             for g in range(2)]
    cols = sort_columns({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    check_complete(spec, cols)  # every (group, chain, generation) once
    drop = {k: v[1:] for k, v in cols.items()}
    with pytest.raises(RuntimeError, match=r"has 23 rows \(23 distinct"):
        check_complete(spec, drop)
    twice = {k: v[np.r_[0, 0:23]] for k, v in cols.items()}  # row 0 twice, the last missing
    with pytest.raises(RuntimeError, match=r"has 24 rows \(23 distinct"):
        check_complete(spec, twice)
