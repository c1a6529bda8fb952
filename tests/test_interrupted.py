"""A run that fails in a later group leaves the finished groups' results readable on disk."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

import collapse_jax as cj
from collapse_jax import cli
from collapse_jax import experiment as E
from collapse_jax.results import GroupWriter


class Boom(RuntimeError):
    pass


def _fail_in_group(monkeypatch, failing: int):
    """Make ``run_sweep`` raise on its ``failing``-th call (0-based); earlier calls run."""
    real = E.run_sweep
    calls = []

    def flaky(static, *args, **kwargs):
        calls.append(static)
        if len(calls) - 1 == failing:
            raise Boom(f"simulated crash in group {failing} (n={static.n})")
        return real(static, *args, **kwargs)

    monkeypatch.setattr(E, "run_sweep", flaky)
    return calls


def test_exception_in_a_later_group_leaves_earlier_rows_on_disk(tmp_path, monkeypatch):
    # sizes shared with the CLI tests (one compiled program per group, reused across tests)
    exp = cj.Experiment(name="crash", model="gaussian", regimes=("replace", "accumulate"),
                        seeds=2, generations=3, n=6, d=2, n_test=8, chunk_size=2)
    calls = _fail_in_group(monkeypatch, failing=1)
    writer = GroupWriter(tmp_path, exp)
    writer.start()
    with pytest.raises(Boom) as info:
        E.run_experiment(exp, on_group=writer)
    assert len(calls) == 2
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["complete"] is False and summary["groups_done"] == 1
    assert summary["groups_total"] == 2 and summary["rows"] == 6
    assert "error" not in summary
    writer.fail(info.value)  # what the CLI does on the way out: the finished rows, the error
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert len(table) == 1 * 2 * 3  # group replace: 2 seeds, 3 generations
    assert set(table["regime"]) == {"replace"}
    assert not table.drop(columns=["collapsed", "nonfinite"]).isna().any().any()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["error"] == "Boom: simulated crash in group 1 (n=6)"
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["experiment"]["regimes"] == ["replace", "accumulate"]
    # the rows on disk are exactly those of an uninterrupted run
    monkeypatch.undo()
    full = E.run_experiment(dataclasses.replace(exp, regimes=("replace",))).table
    pd.testing.assert_frame_equal(table, full, check_dtype=False)


def test_cli_run_failure_exit_1_keeps_finished_groups(tmp_path, monkeypatch, capsys):
    _fail_in_group(monkeypatch, failing=1)
    out = tmp_path / "run"
    code = cli.main(["run", "configs/gaussian.py", "--set", "seeds=2", "--set",
                     "generations=3", "--set", "n=6,8", "--set", "d=2", "--set", "n_test=8",
                     "--set", "regime=replace", "--set", "chunk_size=2", "--out", str(out),
                     "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err == ["collapse-jax: run failed: Boom: simulated crash in group 1 (n=8) "
                   "(rerun with --debug for the traceback)"]
    table = pd.read_csv(out / "metrics.csv")
    assert len(table) == 2 * 3 and set(table["n"]) == {6}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["error"].startswith("Boom: simulated")
