"""End to end: the CLI (``collapse_jax.cli``) writes the tidy table, config, summary and figures;
bad input and bad config files (``BAD_CONFIG_FILES``: ``python tests/test_cli.py`` prints each
with its message) are one line; exit codes are 0 ok, 2 bad input, 1 run failure (keeping the
finished groups); ``--dry-run`` prints the plan and compiles nothing; an output directory holding
a different run is refused.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
from conftest import child_env, fail_group, own_compilation_cache

import collapse_jax as cj
from collapse_jax import cli, programs
from collapse_jax import experiment as E
from collapse_jax.config import ConfigError
from collapse_jax.validate import statics

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


def test_config_by_name_and_regime_override(tmp_path, capsys):
    out = tmp_path / "lr"
    code = cli.main(["run", "linear_regression", "--set", "regime=accumulate", "--set",
                     "seeds=2", "--set", "generations=3", "--set", "n=10", "--set", "d=3",
                     "--out", str(out)])
    assert code == 0
    table = pd.read_csv(out / "metrics.csv")
    assert set(table["regime"]) == {"accumulate"} and len(table) == 6
    # the last line splits the wall time: compile, chains, table, writing, figures
    last = capsys.readouterr().out.strip().splitlines()[-1]
    found = re.search(r"\(compile (\S+) s, run (\S+) s, table (\S+) s, writing (\S+) s, "
                      r"figures (\S+) s, total (\S+) s\)$", last)
    assert found and last.startswith(f"6 rows, 4 figures -> {out} "), last
    *phases, total = map(float, found.groups())
    assert min(phases) >= 0 and sum(phases) <= total + 0.3, last


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
    """``cli.entry`` (the command; it skips the interpreter's teardown with ``os._exit``)
    keeps main's exit code and flushes what was printed, on both streams."""
    proc = subprocess.run([sys.executable, "-m", "collapse_jax.cli", "list"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "models:" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "collapse_jax.cli", "run", "gaussian", "--set",
                           "seeds=0", "--dry-run"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("collapse-jax: error: seeds")


def test_command_start_leaves_the_network_libraries_unloaded():
    """Starting the command (``import collapse_jax.cli``: every family registered) imports
    neither flax nor optax, about 0.5 s of every command's start (benchmarks/startup.py); a
    neural family, registered with ``model.lazy_factory``, loads them when its chain is built."""
    code = ("import sys, collapse_jax.cli\n"
            "print(sorted(m for m in ('flax', 'optax') if m in sys.modules))\n"
            "from collapse_jax import StaticConfig, chain\n"
            "chain.make_chain(StaticConfig('vae', 'replace', n0=8, n=8, d=64, generations=2, "
            "options={'hidden': 4, 'latent': 2}))\n"
            "print(sorted(m for m in ('flax', 'optax') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, env=child_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:2] == ["[]", "['flax', 'optax']"], proc.stdout


def test_persistent_compilation_cache_is_used_and_changes_nothing(tmp_path, monkeypatch):
    """A CLI run stores its compiled programs; a later run loads them (cache hits, no chain
    program stored anew) and writes the same table. At collapse_jax's own threshold
    (``programs.MIN_CACHED_COMPILE_SECS``): with JAX's default of one second, these programs,
    compiled fast, were not stored and every warm run recompiled them."""
    import os

    import jax
    cache = tmp_path / "cache"
    monkeypatch.setenv("COLLAPSE_JAX_CACHE_DIR", str(cache))
    monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
    argv = ["run", "linear_regression", "--set", "seeds=2", "--set", "generations=3", "--set",
            "n=11", "--set", "d=4", "--set", "compile=fast", "--quiet"]  # sizes no other test
    proc = subprocess.run([sys.executable, "-m", "collapse_jax.cli", *argv, "--out",
                           str(tmp_path / "run0")], env=dict(os.environ), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entries = sorted(p.name for p in cache.iterdir())
    chain_programs = [e for e in entries if e.startswith(("jit_init_", "jit_advance_"))]
    assert len(chain_programs) >= 2, entries  # init + advance
    events = []

    def listen(event, **kwargs):
        events.append(event)

    with own_compilation_cache():  # not the suite's shared cache, if any
        jax.monitoring.register_event_listener(listen)
        try:  # the second run in this process, which has compiled none of these programs
            assert cli.main([*argv, "--out", str(tmp_path / "run1")]) == 0
            assert jax.config.jax_persistent_cache_min_compile_time_secs == \
                programs.MIN_CACHED_COMPILE_SECS
        finally:
            jax.monitoring.unregister_event_listener(listen)
    assert events.count("/jax/compilation_cache/cache_hits") >= len(chain_programs)
    after = sorted(p.name for p in cache.iterdir())
    assert [e for e in after if e.startswith(("jit_init_", "jit_advance_"))] == chain_programs
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


# ----------------------------------------------------------------------------------------------
# Config files (cli.load_config)


def _assert_one_line(msg: str, fragments) -> None:
    """A one-line message containing every fragment."""
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"


BAD_CONFIG_FILES = [
    ("missing", None, ["config=", "no such file or config name", "known configs:"]),
    ("not-python", "x.txt", ["not a python file"]),
    ("syntax-error", "def get_config(:\n", ["failed to load: SyntaxError", "line 1"]),
    ("import-error", "import not_a_module_xyz\n", ["failed to load: ModuleNotFoundError"]),
    ("no-get_config", "X = 1\n", ["defines no get_config()"]),
    ("get_config-raises", "def get_config():\n    raise RuntimeError('boom')\n",
     ["get_config() failed: RuntimeError: boom"]),
    ("unknown-field", "from collapse_jax import Experiment\n"
     "def get_config():\n    return Experiment(name='x', model='gaussian', seed=3)\n",
     ["Experiment has no field 'seed'", "did you mean 'seeds'"]),
    ("wrong-type", "def get_config():\n    return {'name': 'x'}\n",
     ["get_config() must return an Experiment, got dict"]),
]


@pytest.mark.parametrize("text,fragments", [c[1:] for c in BAD_CONFIG_FILES],
                         ids=[c[0] for c in BAD_CONFIG_FILES])
def test_bad_config_file_is_one_line(tmp_path, text, fragments):
    if text is None:
        ref = str(tmp_path / "nope.py")
    elif text == "x.txt":
        ref = tmp_path / "x.txt"
        ref.write_text("")
        ref = str(ref)
    else:
        ref = tmp_path / "cfg.py"
        ref.write_text(text)
        ref = str(ref)
    with pytest.raises(ConfigError) as info:
        cli.load_config(ref)
    _assert_one_line(str(info.value), fragments)


# ----------------------------------------------------------------------------------------------
# Exit codes, --dry-run, output directory


TINY = ["--set", "seeds=2", "--set", "generations=3", "--set", "n=6", "--set", "d=2",
        "--set", "n_test=8", "--set", "regime=replace", "--set", "chunk_size=2", "--quiet"]


def _run(capsys, *args):
    code = cli.main(["run", "configs/gaussian.py", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def test_exit_2_on_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "o"
    for args in (["--set", "seeds=ten"], ["--set", "n=1.5"], ["--set", "sigma=-1"]):
        code, _, err = _run(capsys, *args, "--out", str(out))
        assert code == 2 and len(err.splitlines()) == 1 and err.startswith("collapse-jax: error:")
    assert not out.exists()
    code = cli.main(["run", str(tmp_path / "missing.py"), "--out", str(out)])
    assert code == 2 and "no such file" in capsys.readouterr().err


def test_exit_1_on_run_failure_one_line_traceback_only_with_debug(tmp_path, capsys, monkeypatch):
    def boom(*a, **k):
        raise FloatingPointError("simulated failure\nsecond line")

    monkeypatch.setattr(E, "prepare_sweep", boom)
    code, _, err = _run(capsys, *TINY, "--out", str(tmp_path / "a"))
    assert code == 1
    assert err.splitlines() == [
        "collapse-jax: run failed: FloatingPointError: simulated failure second line "
        "(rerun with --debug for the traceback)"]
    code, _, err = _run(capsys, *TINY, "--out", str(tmp_path / "b"), "--debug")
    assert code == 1 and "Traceback (most recent call last)" in err
    assert err.splitlines()[-1] == (
        "collapse-jax: run failed: FloatingPointError: simulated failure second line")
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["complete"] is False and "FloatingPointError" in summary["error"]


def test_cli_run_failure_exit_1_keeps_finished_groups(tmp_path, monkeypatch, capsys):
    fail_group(monkeypatch, 1, lambda static: static.n == 8)
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


def test_dry_run_prints_the_plan_and_compiles_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(E, "prepare_sweep", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("dry run ran a sweep")))
    import jax

    def no_compile(*a, **k):
        raise AssertionError("dry run compiled")

    monkeypatch.setattr(jax.stages.Lowered, "compile", no_compile)
    out = tmp_path / "dry"
    code, text, err = _run(capsys, "--set", "seeds=5", "--set", "generations=7", "--set",
                           "n=6,12", "--set", "hparams.sigma=1,2", "--out", str(out),
                           "--dry-run")
    assert code == 0, err
    assert "6 groups, 6 compiles, 60 chains, 420 rows" in text
    lines = [ln for ln in text.splitlines() if ln.strip().startswith(("replace", "accumulate"))]
    assert len(lines) == 6 and all(" 10 " in ln and " 7 " in ln for ln in lines)
    assert "KiB" in text and "peak memory per device" in text
    assert not out.exists()
    from collapse_jax.plan import bytes_per_chain, plan_run
    from collapse_jax.regimes import make_regime

    spec = cj.resolve(cj.override(cli.load_config("configs/gaussian.py"),
                                  ["seeds=5", "generations=7", "n=6,12", "regime=replace"]))
    plans = plan_run(spec)
    assert len(plans) == 2 and spec.chains * len(plans) == 10
    static = statics(cj.Experiment(name="p", model="gaussian", regimes=("replace",), seeds=5,
                                   generations=7, n=6, d=10, n_test=200))[0]
    assert plans[0].bytes_per_chain == bytes_per_chain(static, {})
    assert make_regime(spec.statics[0]).capacity == 6
    code, _, err = _run(capsys, "--set", "seeds=0", "--out", str(out), "--dry-run")
    assert code == 2 and "seeds=0" in err


def test_output_dir_holding_a_different_run_is_refused(tmp_path, capsys, monkeypatch):
    from collapse_jax import plots

    monkeypatch.setattr(plots, "plot_all", lambda results, out: [])  # figures: not tested here
    out = tmp_path / "run"
    assert _run(capsys, *TINY, "--out", str(out))[0] == 0
    before = (out / "metrics.csv").read_text()
    # the same run again is fine (deterministic), and so is --resume of it; chunk_size does not
    # change the results, so it does not make a different run. (chunk_size=4 for 2 seeds: plans
    # keep >= 2 chains per device, the documented bitwise guarantee; an explicit chunk_size=1 is
    # honoured, and XLA lowers a batch of one chain differently: last-ulp differences, see
    # plan.MIN_CHAINS_PER_DEVICE.)
    assert _run(capsys, *TINY, "--out", str(out))[0] == 0
    assert _run(capsys, *TINY, "--set", "chunk_size=4", "--out", str(out))[0] == 0
    assert _run(capsys, *TINY, "--out", str(out), "--resume")[0] == 0
    assert (out / "metrics.csv").read_text() == before
    # a different run is refused, naming what differs
    code, _, err = _run(capsys, *TINY, "--set", "seeds=3", "--out", str(out))
    assert code == 2 and len(err.splitlines()) == 1
    assert "already holds a different run" in err and "seeds: 2 -> 3" in err
    assert "--overwrite" in err
    code, _, err = _run(capsys, *TINY, "--set", "seeds=3", "--out", str(out), "--resume")
    assert code == 2 and "--resume, but it holds a different run" in err
    code, _, err = _run(capsys, *TINY, "--out", str(out), "--resume", "--overwrite")
    assert code == 2 and "choose one" in err
    assert (out / "metrics.csv").read_text() == before
    # a dry run reports the refusal too, and never removes anything
    code, _, err = _run(capsys, *TINY, "--set", "seeds=3", "--out", str(out), "--dry-run")
    assert code == 2 and "already holds a different run" in err
    code, text, _ = _run(capsys, *TINY, "--set", "seeds=3", "--out", str(out), "--dry-run",
                         "--overwrite")
    assert code == 0 and "--overwrite would replace it" in text
    assert (out / "metrics.csv").read_text() == before
    # --overwrite replaces it
    assert _run(capsys, *TINY, "--set", "seeds=3", "--out", str(out), "--overwrite")[0] == 0
    assert json.loads((out / "config.json").read_text())["experiment"]["seeds"] == 3
    # a non-empty directory that holds no run
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, _, err = _run(capsys, *TINY, "--out", str(other))
    assert code == 2 and "holds no collapse-jax run" in err
    assert (other / "notes.txt").read_text() == "mine"
    # a file where the directory should be
    code, _, err = _run(capsys, *TINY, "--out", str(other / "notes.txt"))
    assert code == 2 and "is not a directory" in err


if __name__ == "__main__":  # the closing note: every bad config file and the message it produced
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        for _name, text, _ in BAD_CONFIG_FILES:
            if text is None:
                ref = str(Path(tmp) / "nope.py")
            else:
                ref = Path(tmp) / ("x.txt" if text == "x.txt" else "cfg.py")
                ref.write_text("" if text == "x.txt" else text)
            try:
                cli.load_config(str(ref))
            except ConfigError as e:
                print(f"| config file: {_name} | {e} |")
