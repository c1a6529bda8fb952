"""Checkpoints (``collapse_jax.checkpoint``): a corrupt latest checkpoint (truncated files or a
wrong checksum) falls back to the previous one with a warning; the checkpointer measures how
long a state save takes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import collapse_jax as cj
from collapse_jax.checkpoint import CheckpointWarning


def _steps(ckpt: Path) -> list[int]:
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []


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


# orbax/tensorstore leaves an internal coroutine un-awaited when reading truncated array files
# fails; Python reports it whenever that coroutine is garbage-collected (flaky under -W error).
@pytest.mark.filterwarnings("ignore:coroutine '.*' was never awaited:RuntimeWarning")
@pytest.mark.parametrize("damage", ["files", "checksum"])
def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, damage):
    ref = cj.run_experiment(EXP).table
    out = tmp_path / "o"
    _run_until(EXP, out, calls=6)
    steps = _steps(out / "checkpoints")
    assert len(steps) >= 2
    latest = out / "checkpoints" / str(steps[-1])
    if damage == "files":  # truncated array data
        for f in (latest / "state").rglob("*"):
            if f.is_file() and f.parent.name == "d":
                f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    else:  # readable, but the state is not the one that was saved
        record_file = latest / "record" / "metadata"
        record = json.loads(record_file.read_text())
        record["checksum"][0][0] += 1
        record_file.write_text(json.dumps(record))
    with pytest.warns(CheckpointWarning, match=rf"step {steps[-1]} .*falling back to step "
                                               rf"{steps[-2]}"):
        res = cj.run_experiment(EXP, out_dir=out, resume=True)
    assert res.table.equals(ref)


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
