"""The examples run as a user runs them (``python examples/<name>.py OUT --small``, in a
subprocess with strict JAX settings: rank and dtype promotion errors, key-reuse checks) and write
what their docstrings say, with finite numbers and replace worse than accumulate (a robust fact
at these sizes: the fitted spread shrinks under replace, by about 1/n of the variance per
generation, and stays put under accumulate)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
STRICT = {"JAX_NUMPY_RANK_PROMOTION": "raise", "JAX_NUMPY_DTYPE_PROMOTION": "strict",
          "JAX_DEBUG_KEY_REUSE": "true", "COLLAPSE_JAX_CACHE_DIR": "off", "PYTHONPATH": str(ROOT)}


def run_example(name: str, out: Path) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), str(out), "--small"],
                          cwd=ROOT, env={**os.environ, **STRICT}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_custom_model_runs_with_the_library_sweep(tmp_path):
    out = tmp_path / "custom"
    stdout = run_example("custom_model.py", out)
    for name in ("metrics.csv", "summary.json", "config.json", "std_ratio.png",
                 "mean_error.png", "scaling.csv", "scaling.png"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "metrics.csv")
    assert set(table["model"]) == {"diag_gaussian"} and set(table["n"]) == {10, 100}
    assert len(table) == 2 * 2 * 50 * 8  # regimes x n x seeds x generations
    assert np.isfinite(table[["std_ratio", "mean_error"]].to_numpy()).all()
    last = table[table["generation"] == 7].groupby(["regime", "n"])["std_ratio"].mean()
    assert last["replace", 10] < last["accumulate", 10] - 0.1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["rows"] == len(table)
    scaling = pd.read_csv(out / "scaling.csv")
    assert {"slope", "plateau"} <= set(scaling["quantity"])
    assert "std_ratio" in stdout


def test_pool_in_my_loop_uses_the_regimes_in_an_optax_scan(tmp_path):
    out = tmp_path / "loop"
    stdout = run_example("pool_in_my_loop.py", out)
    table = pd.read_csv(out / "pool_in_my_loop.csv")
    assert list(table.columns) == ["regime", "generation", "sigma_mean", "sigma_sem",
                                   "mu2_mean", "mu2_sem"]
    assert len(table) == 2 * 10 and np.isfinite(table.iloc[:, 2:].to_numpy()).all()
    last = table[table["generation"] == 9].set_index("regime")
    gap = last.loc["accumulate", "sigma_mean"] - last.loc["replace", "sigma_mean"]
    assert gap > 3 * np.hypot(last.loc["accumulate", "sigma_sem"], last.loc["replace", "sigma_sem"])
    first = table[table["generation"] == 0].set_index("regime")["sigma_mean"]
    assert abs(first["replace"] - first["accumulate"]) < 1e-6  # same seeds, same real data
    png = (out / "pool_in_my_loop.png").read_bytes()
    assert png[:4] == b"\x89PNG" and "replace: fitted sigma" in stdout
