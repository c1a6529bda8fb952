"""A run that fails in a later group leaves the finished groups' results readable on disk."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

import collapse_jax as cj
from collapse_jax import cli
from collapse_jax import experiment as E
from collapse_jax.files import write_json
from collapse_jax.results import config_record, write_partial
from collapse_jax.store import finished_columns


class Boom(RuntimeError):
    pass


def _fail_in_group(monkeypatch, failing: int):
    """Make ``prepare_sweep`` raise for its ``failing``-th group (0-based); earlier groups run."""
    real = E.prepare_sweep
    calls = []

    def flaky(static, *args, **kwargs):
        calls.append(static)
        if len(calls) - 1 == failing:
            raise Boom(f"simulated crash in group {failing} (n={static.n})")
        return real(static, *args, **kwargs)

    monkeypatch.setattr(E, "prepare_sweep", flaky)
    return calls


def test_exception_in_a_later_group_leaves_earlier_rows_on_disk(tmp_path, monkeypatch):
    # sizes shared with the CLI tests (one compiled program per group, reused across tests)
    exp = cj.Experiment(name="crash", model="gaussian", regimes=("replace", "accumulate"),
                        seeds=2, generations=3, n=6, d=2, n_test=8, chunk_size=2)
    spec = cj.resolve(exp)
    calls = _fail_in_group(monkeypatch, failing=1)
    write_json(tmp_path / "config.json", config_record(spec))
    with pytest.raises(Boom) as info:
        E.run_experiment(spec, out_dir=tmp_path)
    assert len(calls) == 2
    rows_per_group = spec.chains * exp.generations
    done = finished_columns(tmp_path, rows_per_group)  # the finished group's rows, from parts
    assert len(done["_group"]) == 6 and set(done["_group"].tolist()) == {0}
    write_partial(spec, tmp_path, done, error=info.value)  # what the CLI does on the way out
    table = pd.read_csv(tmp_path / "metrics.csv")
    assert len(table) == 1 * 2 * 3  # group replace: 2 seeds, 3 generations
    assert set(table["regime"]) == {"replace"}
    assert not table.drop(columns=["collapsed", "nonfinite"]).isna().any().any()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["complete"] is False and summary["groups_done"] == 1
    assert summary["groups_total"] == 2 and summary["rows"] == 6
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


class _FakeCheckpointer:
    """Records saves; reports a fixed state-save duration once a state has been saved."""

    def __init__(self, seconds):
        self.seconds, self.saved = seconds, []

    def save(self, step, state, record):
        self.saved.append((step, state is not None))

    def state_save_seconds(self):
        return self.seconds if any(s for _, s in self.saved) else None

    def wait(self):
        pass

    def close(self):
        pass


@pytest.mark.parametrize("every, expect", [
    (30.0, [31.0, 132.0]),  # after a 10 s save: every max(30, 10 / 0.1) = 100 s
    (0.0, [31.0, 62.0, 93.0, 132.0, 140.0]),  # 0: every boundary, whatever it costs
])
def test_checkpoint_interval_grows_with_the_measured_save_time(tmp_path, monkeypatch, every,
                                                                expect):
    from types import SimpleNamespace

    import numpy as np

    from collapse_jax import store as st

    now = [0.0]
    monkeypatch.setattr(st, "time", SimpleNamespace(monotonic=lambda: now[0]))
    store = st.RunStore(tmp_path, {"x": 1}, every_seconds=every)
    store.ckpt.close()
    store.ckpt = fake = _FakeCheckpointer(10.0)
    saved_at = []
    for t in (31.0, 62.0, 93.0, 132.0, 140.0):
        now[0] = t
        before = len(fake.saved)
        store.chunk_done(0, {"v": np.zeros(2)}, 0, int(t), int(t) + 1, 1000, {"s": 1},
                         {"generations": 1000})
        if len(fake.saved) > before:
            saved_at.append(t)
    assert saved_at == expect
    assert all(state for _, state in fake.saved)


def test_checkpointer_measures_a_state_save(tmp_path):
    import jax.numpy as jnp

    from collapse_jax import checkpoint as ck

    c = ck.Checkpointer(tmp_path / "c")
    assert c.state_save_seconds() is None
    c.save(0, None, {"a": 1})  # a record only: not a state save
    c.wait()
    assert c.state_save_seconds() is None
    c.save(1, {"x": jnp.ones((64, 64))}, {"a": 1})
    c.wait()
    first = c.state_save_seconds()
    assert first is not None and first > 0
    c.close()
