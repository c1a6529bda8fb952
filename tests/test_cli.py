"""End to end: the CLI writes the tidy table, config, summary and figures; bad input is one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from collapse_jax import cli

SMALL = ["--set", "seeds=3", "--set", "generations=4", "--set", "n=8,12", "--set", "d=2",
         "--set", "n_test=16"]


def test_run_writes_table_config_summary_and_figures(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", "configs/gaussian.py", *SMALL, "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "metrics.csv")
    assert list(table.columns[:6]) == ["experiment", "model", "regime", "seed", "generation", "n"]
    assert {"trace_ratio", "logdet_ratio", "mean_error", "w2", "nll"} <= set(table.columns)
    assert len(table) == 3 * 2 * 3 * 4  # regimes x n x seeds x generations
    assert not table.isna().any().any()
    config = json.loads((out / "config.json").read_text())
    assert config["experiment"]["seeds"] == 3 and config["experiment"]["n"] == [8, 12]
    assert "jax" in config["versions"]
    summary = json.loads((out / "summary.json").read_text())
    rows = [r for r in summary["final_generation"]
            if r["regime"] == "replace" and r["metric"] == "trace_ratio" and r["n"] == 8]
    assert rows and abs(rows[0]["theory"] - (7 / 8) ** 4) < 1e-9
    for metric in ("trace_ratio", "mean_error", "w2", "nll"):
        png = (out / f"{metric}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_config_by_name_and_regime_override(tmp_path):
    out = tmp_path / "lr"
    code = cli.main(["run", "linear_regression", "--set", "regime=accumulate", "--set",
                     "seeds=2", "--set", "generations=3", "--set", "n=10", "--set", "d=3",
                     "--out", str(out), "--quiet"])
    assert code == 0
    table = pd.read_csv(out / "metrics.csv")
    assert set(table["regime"]) == {"accumulate"} and len(table) == 6


@pytest.mark.parametrize("args,field", [
    (["--set", "seedz=3"], "seedz"),
    (["--set", "regime=replase"], "replase"),
    (["--set", "n=0"], "n=0"),
    (["--set", "sigma=abc"], "sigma"),
    (["--set", "options.unbiassed=True"], "unbiassed"),
])
def test_bad_input_is_one_line_naming_the_field(tmp_path, capsys, args, field):
    code = cli.main(["run", "configs/gaussian.py", *args, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and field in err, err
    assert not (tmp_path / "x").exists()


def test_unknown_key_suggests_the_close_one(capsys):
    assert cli.main(["run", "configs/gaussian.py", "--set", "generatons=3", "--out", "x"]) == 2
    assert "did you mean 'generations'" in capsys.readouterr().err


def test_list_names_models_regimes_configs(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("gaussian", "linear_regression", "replace", "accumulate_subsample",
                 "configs"):
        assert word in out


def test_console_script_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "collapse_jax.cli", "list"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "models:" in proc.stdout


def test_persistent_compilation_cache_is_used_and_changes_nothing(tmp_path, monkeypatch):
    """A CLI run stores its compiled programs; a later run loads them (cache hits, no new
    entries) and writes the same table."""
    import os

    import jax
    from jax._src import compilation_cache

    cache = tmp_path / "cache"
    monkeypatch.setenv("COLLAPSE_JAX_CACHE_DIR", str(cache))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    argv = ["run", "linear_regression", "--set", "seeds=2", "--set", "generations=3", "--set",
            "n=11", "--set", "d=4", "--quiet"]  # sizes no other test compiles in this process
    proc = subprocess.run([sys.executable, "-m", "collapse_jax.cli", *argv, "--out",
                           str(tmp_path / "run0")], env=dict(os.environ), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entries = sorted(p.name for p in cache.iterdir())
    assert any(e.startswith("jit_one-") for e in entries), entries  # the chain programs
    events = []

    def listen(event, **kwargs):
        events.append(event)

    jax.monitoring.register_event_listener(listen)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    try:  # the second run in this process, which has compiled none of these programs
        assert cli.main([*argv, "--out", str(tmp_path / "run1")]) == 0
    finally:
        jax.monitoring.unregister_event_listener(listen)
        jax.config.update("jax_compilation_cache_dir", None)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
        compilation_cache.reset_cache()
    assert events.count("/jax/compilation_cache/cache_hits") >= 2  # init + advance programs
    assert "/jax/compilation_cache/cache_misses" not in events
    assert sorted(p.name for p in cache.iterdir()) == entries
    assert (tmp_path / "run0" / "metrics.csv").read_bytes() == \
        (tmp_path / "run1" / "metrics.csv").read_bytes()


def test_dry_run_prints_the_chunk_sizes_the_run_uses(tmp_path, capsys):
    """``--dry-run`` and the run share one planner: with one seed the plan pads to
    ``plan.MIN_CHAINS_PER_DEVICE`` chains per device (the former dry-run planner printed 1)."""
    args = ["run", "configs/gaussian.py", "--set", "seeds=1", "--set", "generations=3",
            "--set", "n=6,12", "--set", "d=2", "--set", "n_test=8", "--set", "regime=replace"]
    assert cli.main([*args, "--dry-run"]) == 0
    lines = [ln.split() for ln in capsys.readouterr().out.splitlines()
             if ln.strip().startswith("replace")]
    printed = [int(cols[-2]) for cols in lines]
    assert cli.main([*args, "--out", str(tmp_path / "o"), "--quiet"]) == 0
    timing = json.loads((tmp_path / "o" / "summary.json").read_text())["timing"]
    assert printed == [g["chunk_size"] for g in timing] == [2, 2]
