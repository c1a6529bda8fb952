"""The run store (``collapse_jax.store``): a run killed with SIGKILL mid-sweep resumes to a
bit-identical table; the table read back from the results parts equals the one in memory; resume
refuses a different experiment; the checkpoint interval grows with the measured save time.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import child_env

import collapse_jax as cj
from collapse_jax import cli, tables
from collapse_jax import store as store_mod
from collapse_jax.analyze import load_run
from collapse_jax.config import ConfigError
from collapse_jax.results import write_results
from collapse_jax.tables import write_csv


def _write_config(path: Path, **fields) -> Path:
    body = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    path.write_text(f"from collapse_jax import Experiment\n\n\ndef get_config():\n"
                    f"    return Experiment({body})\n")
    return path


def _reference_csv(cfg: Path, tmp_path: Path) -> bytes:
    res = cj.run_experiment(cli.load_config(str(cfg)))  # in memory: no checkpoints
    path = tmp_path / "ref.csv"
    write_csv(res.table, path)
    return path.read_bytes()


def _steps(ckpt: Path) -> list[int]:
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []


def test_sigkill_mid_sweep_then_resume_is_bit_identical(tmp_path):
    cfg = _write_config(tmp_path / "kill.py", name="kill", model="gaussian",
                        regimes=("accumulate_subsample",), seeds=4, generations=80,
                        n=8, d=2, n_test=8, generation_chunk=2, keep_checkpoints=2,
                        checkpoint_seconds=0)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "collapse_jax.cli", "run", str(cfg), "--out",
                             str(out), "--quiet"], env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not _steps(out / "checkpoints") and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "metrics.csv").exists()
    assert any((out / "metrics").iterdir()), "no finished generation was kept"
    assert cli.main(["run", str(cfg), "--out", str(out), "--quiet", "--resume"]) == 0
    assert (out / "metrics.csv").read_bytes() == _reference_csv(cfg, tmp_path)
    table = pd.read_csv(out / "metrics.csv")
    counts = table.groupby(["regime", "seed", "generation"]).size()
    assert len(table) == 4 * 80 and (counts == 1).all()
    assert len(_steps(out / "checkpoints")) <= 2  # keep_checkpoints


class _Stop(Exception):
    pass


def _run_until(exp, out, calls):
    seen = [0]

    def progress(label, done, total):
        seen[0] += 1
        if seen[0] == calls:
            raise _Stop

    with pytest.raises(_Stop):
        cj.run_experiment(exp, out_dir=out, progress=progress)


EXP = cj.Experiment(name="ck", model="gaussian", regimes=("accumulate_subsample", "replace"),
                    seeds=3, generations=9, n=6, d=2, n_test=8, hparams={"sigma": (1.0, 2.0)},
                    chunk_size=4, generation_chunk=3, checkpoint_seconds=0)


def test_table_in_memory_equals_table_from_parts(tmp_path):
    mem = cj.run_experiment(EXP).table
    disk = cj.run_experiment(EXP, out_dir=tmp_path / "o").table
    assert mem.equals(disk) and (mem.dtypes == disk.dtypes).all()


@pytest.mark.parametrize("hold_bytes", [store_mod.HOLD_BYTES, 0])
def test_finish_reads_back_only_the_parts_it_does_not_hold(tmp_path, monkeypatch, hold_bytes):
    """The rows a run wrote stay in memory for its table (``store.HOLD_BYTES``; past it they
    are read back): the same table either way, and the same as a reader of the parts gets."""
    monkeypatch.setattr(store_mod, "HOLD_BYTES", hold_bytes)
    reads = []
    real_read = tables.read_part
    monkeypatch.setattr(tables, "read_part", lambda p: reads.append(p) or real_read(p))
    res = cj.run_experiment(EXP, out_dir=tmp_path / "o")
    assert (len(reads) == 0) == (hold_bytes > 0)
    write_results(res, tmp_path / "o")  # config.json, for load_run
    table, disk = res.table, load_run(tmp_path / "o").table
    assert table.equals(disk) and (table.dtypes == disk.dtypes).all()


def test_resume_refuses_a_different_experiment(tmp_path):
    out = tmp_path / "o"
    _run_until(EXP, out, calls=4)
    other = cj.override(EXP, ["root_seed=5"])
    with pytest.raises(ConfigError, match="different run.*root_seed"):
        cj.run_experiment(other, out_dir=out, resume=True)
    # chunking knobs may change on resume: results do not depend on them
    res = cj.run_experiment(cj.override(EXP, ["generation_chunk=2", "keep_checkpoints=1"]),
                            out_dir=out, resume=True)
    assert res.table.equals(cj.run_experiment(EXP).table)


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


def test_a_failed_part_write_fails_the_run_and_resume_loses_nothing(tmp_path, monkeypatch):
    """Parts are written on a thread while the next chunk runs: a write that fails stops the
    run with its error, no checkpoint claims the unwritten part, and ``resume`` gives the table
    of an uninterrupted run."""
    from collapse_jax import store

    real, calls = store.write_part, []

    def flaky(path, columns, labels=None):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full (simulated)")
        return real(path, columns, labels)

    exp = cj.Experiment(name="parts", model="gaussian", regimes=("replace", "accumulate"),
                        seeds=6, generations=4, n=6, d=2, n_test=8, chunk_size=2,
                        generation_chunk=2, checkpoint_seconds=0.0)
    monkeypatch.setattr(store, "write_part", flaky)
    with pytest.raises(OSError, match="disk full"):
        cj.run_experiment(exp, out_dir=tmp_path / "run")
    monkeypatch.undo()
    resumed = cj.run_experiment(exp, out_dir=tmp_path / "run", resume=True).table
    pd.testing.assert_frame_equal(resumed, cj.run_experiment(exp).table)
