"""The chain mesh and several processes (``collapse_jax.mesh``): the default mesh spans every
device; two processes under ``jax.distributed`` each write their own chains, and together the
same table as one process.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import jax
from conftest import child_env

import collapse_jax as cj
from collapse_jax import cli
from collapse_jax.mesh import make_mesh
from collapse_jax.tables import load_columns, write_csv


def test_mesh_default_spans_every_device():
    mesh = make_mesh()
    assert mesh.axis_names == ("chains",) and mesh.devices.size == jax.device_count()


def _write_config(path: Path, **fields) -> Path:
    body = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    path.write_text(f"from collapse_jax import Experiment\n\n\ndef get_config():\n"
                    f"    return Experiment({body})\n")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_write_the_same_table_as_one(tmp_path):
    cfg = _write_config(tmp_path / "mp.py", name="mp", model="linear_regression",
                        regimes=("replace", "accumulate"), seeds=5, generations=5, n=8, d=3,
                        n_test=8, hparams={"sigma": (1.0, 2.0)}, generation_chunk=2)
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "collapse_jax.cli", "run", str(cfg), "--out",
         str(tmp_path / "two"), "--quiet", "--coordinator", f"localhost:{port}",
         "--num-processes", "2", "--process-id", str(i)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
        for i in range(2)]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    one = _reference_csv(cfg, tmp_path)  # one process, in memory
    assert (tmp_path / "two" / "metrics.csv").read_bytes() == one
    # each process wrote only its own chains; together exactly every row once
    parts = [load_columns(sorted((tmp_path / "two" / "metrics").glob(f"*-p000{i}.parquet")))
             for i in range(2)]
    keys = [set(zip(p["_group"], p["_chain"], p["generation"], strict=True)) for p in parts]
    assert keys[0] and keys[1] and not keys[0] & keys[1]
    assert len(keys[0] | keys[1]) == 2 * 2 * 5 * 5  # regimes x sigma x seeds x generations
    assert list((tmp_path / "two").glob("*.png"))  # process 0 wrote the figures


def _reference_csv(cfg: Path, tmp_path: Path) -> bytes:
    res = cj.run_experiment(cli.load_config(str(cfg)))  # in memory: no checkpoints
    path = tmp_path / "ref.csv"
    write_csv(res.table, path)
    return path.read_bytes()
