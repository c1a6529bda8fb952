"""``run_experiment`` (``collapse_jax.experiment``): every row of the grid, reproducible for a seed
and different across seeds; a failure in a later group leaves the earlier groups' rows on disk;
the hyperparameter grid includes the regimes' defaults; x64 keeps finite what float32 overflows
and never leaks out of the run.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import Boom, fail_group, own_compilation_cache

import collapse_jax as cj
from collapse_jax import Experiment
from collapse_jax import experiment as E
from collapse_jax.files import write_json
from collapse_jax.results import config_record, write_partial
from collapse_jax.store import finished_columns
from collapse_jax.validate import statics


def test_run_experiment_has_every_row():
    r = cj.run_experiment(cj.Experiment(
        name="rows", model="gaussian", regimes=("replace", "accumulate"), seeds=3,
        generations=4, n=(6, 9), d=2, n_test=8, hparams={"sigma": (1.0, 2.0)}))
    t = r.table
    assert len(t) == 2 * 2 * 2 * 3 * 4
    counts = t.groupby(["regime", "n", "sigma", "seed"]).size()
    assert (counts == 4).all()
    np.testing.assert_array_equal(sorted(t["generation"].unique()), np.arange(4))


def test_experiment_is_reproducible_and_seeds_differ():
    exp = cj.Experiment(name="det", model="gaussian", regimes=("replace",), seeds=3,
                        generations=4, n=8, d=2, n_test=8)
    a = cj.run_experiment(exp).table
    b = cj.run_experiment(exp).table
    assert a.equals(b)
    by_seed = a[a.generation == 3].set_index("seed")["trace_ratio"]
    assert by_seed.nunique() == 3
    c = cj.run_experiment(cj.override(exp, ["root_seed=1"])).table
    assert not np.array_equal(a["trace_ratio"].to_numpy(), c["trace_ratio"].to_numpy())


def test_exception_in_a_later_group_leaves_earlier_rows_on_disk(tmp_path, monkeypatch):
    # small sizes: one compiled program per group
    exp = cj.Experiment(name="crash", model="gaussian", regimes=("replace", "accumulate"),
                        seeds=2, generations=3, n=6, d=2, n_test=8, chunk_size=2)
    spec = cj.resolve(exp)
    calls = fail_group(monkeypatch, 1, lambda static: static.regime == "accumulate")
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
    text = full.select_dtypes("category").columns  # the CSV reads text back as strings
    pd.testing.assert_frame_equal(table, full.astype(dict.fromkeys(text, "str")),
                                  check_dtype=False)


def _exp(**kw):
    base = dict(name="t", model="gaussian", regimes=("fixed_real_mix",), n=10, d=2, n_test=5,
                generations=3, seeds=2)
    return Experiment(**{**base, **kw})


def test_hparam_grid_includes_regime_defaults():
    from collapse_jax.experiment import run_experiment

    exp = _exp(lam_max=2.0, hparams={"lam": (0.5, 2.0)}, generations=2)
    r = run_experiment(exp)
    t = r.table
    assert set(t["lam"]) == {0.5, 2.0}
    last = t[t.generation == 1]
    # pool size after the update: n0 + round(lam n0)
    np.testing.assert_array_equal(last["pool_size"], 10 + np.round(last["lam"] * 10))
    assert dataclasses.asdict(statics(r.experiment)[0])["lam_max"] == 2.0
    # window has no hyperparameter: the default grid of a window experiment is the model's
    assert r.experiment.hparam_grid({"sigma": 1.0}) == [{"lam": 0.5, "sigma": 1.0},
                                                        {"lam": 2.0, "sigma": 1.0}]


def test_a_regime_hyperparameter_swept_beside_other_regimes():
    """configs/mixing.py's layout: lam swept over a run whose other regimes do not read it. Each
    group's chain gets only what it reads (run_sweep refuses a name its chain does not read), the
    table has every regime at every lam, and replace's chains do not depend on lam."""
    exp = _exp(regimes=("replace", "fixed_real_mix"), hparams={"lam": (0.5, 1.0)})
    t = cj.run_experiment(exp).table
    assert set(t["regime"]) == {"replace", "fixed_real_mix"} and set(t["lam"]) == {0.5, 1.0}
    assert len(t) == 2 * 2 * exp.seeds * exp.generations
    rep = t[t.regime == "replace"]
    np.testing.assert_array_equal(rep[rep.lam == 0.5]["trace_ratio"].to_numpy(),
                                  rep[rep.lam == 1.0]["trace_ratio"].to_numpy())


def test_x64_keeps_finite_what_float32_overflows():
    """sigma = 1e25: sigma^2 overflows float32 (flagged nonfinite) but not float64."""
    base = cj.Experiment(name="big", model="gaussian", regimes=("replace",), seeds=2,
                         generations=3, n=6, d=2, n_test=8, hparams={"sigma": 1e25}, x64=True)
    t = cj.run_experiment(base).table
    assert not t["nonfinite"].any() and not t["collapsed"].any()
    g0 = t[t.generation == 0]
    assert np.isfinite(g0["trace_ratio"]).all() and (g0["trace_ratio"] > 0.05).all()
    with pytest.raises(cj.ConfigError, match="overflows float32"):
        cj.validate(dataclasses.replace(base, hparams={"sigma": 1e39}, x64=False))


def test_x64_does_not_leak():
    before = jax.config.jax_enable_x64
    # the same program as test_x64_keeps_finite_what_float32_overflows (compiled once)
    t = cj.run_experiment(cj.Experiment(
        name="leak", model="gaussian", regimes=("replace",), seeds=2, generations=3, n=6, d=2,
        n_test=8, x64=True)).table
    assert t["trace_ratio"].dtype == np.float64
    assert before is False and jax.config.jax_enable_x64 is False
    assert jnp.zeros(1).dtype == jnp.float32
    assert jnp.asarray(1.0).dtype == jnp.float32


def test_python_api_uses_the_persistent_compilation_cache(tmp_path, monkeypatch):
    """``run_experiment`` turns the persistent compilation cache on too: a second identical run,
    in a process that has compiled none of its programs, loads them all (cache hits, no misses)
    and gives the same table."""
    import os
    import subprocess
    import sys

    import jax
    cache = tmp_path / "cache"
    monkeypatch.setenv("COLLAPSE_JAX_CACHE_DIR", str(cache))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    code = ("import sys, collapse_jax as cj\n"
            "e = cj.Experiment(name='api', model='linear_regression', regimes=('replace',), "
            "seeds=2, generations=3, n=13, d=4, n_test=8)\n"
            "cj.run_experiment(e).table.to_csv(sys.argv[1], index=False)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.csv")],
                          env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entries = sorted(p.name for p in cache.iterdir())
    assert any(e.startswith(("jit_init_", "jit_advance_")) for e in entries), entries
    events = []

    def listen(event, **kwargs):
        events.append(event)

    with own_compilation_cache():  # not the suite's shared cache, if any
        jax.monitoring.register_event_listener(listen)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        try:
            exp = cj.Experiment(name="api", model="linear_regression", regimes=("replace",),
                                seeds=2, generations=3, n=13, d=4, n_test=8)
            table = cj.run_experiment(exp).table
        finally:
            jax.monitoring.unregister_event_listener(listen)
    assert events.count("/jax/compilation_cache/cache_hits") >= 2  # init + advance programs
    assert "/jax/compilation_cache/cache_misses" not in events
    assert sorted(p.name for p in cache.iterdir()) == entries
    table.to_csv(tmp_path / "b.csv", index=False)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_compiling_the_next_group_while_one_runs_changes_nothing(monkeypatch):
    """``Prefetch``: each group compiled on a background thread while the group before runs
    (float64 groups under their own precision there) gives the table of compiling in turn."""
    from collapse_jax import experiment

    exp = cj.Experiment(name="prefetch", model="linear_regression", regimes=("replace",),
                        seeds=3, generations=4, n=(9, 12), d=3, n_test=8, x64=True)
    tables = {}
    for ahead in (0, 1):
        monkeypatch.setattr(experiment, "PREFETCH", ahead)
        cj.clear_caches()
        tables[ahead] = cj.run_experiment(exp).table
    assert tables[1]["test_error"].dtype == np.float64
    pd.testing.assert_frame_equal(tables[0], tables[1])


def test_prefetch_order_and_errors():
    from collapse_jax.experiment import Prefetch

    calls = []

    def prepare(i):
        calls.append(i)
        if i == 3:
            raise ValueError("group 3 does not compile")
        return i * 10

    with Prefetch(prepare, [0, 2, 3]) as setups:
        assert setups.get(0) == 0 and setups.get(2) == 20
        with pytest.raises(ValueError, match="group 3"):
            setups.get(3)  # raised in the main thread
    assert sorted(calls) == [0, 2, 3]


def test_prefetch_starts_the_next_group_once_the_first_is_ready():
    """The first group (nothing started ahead) is prepared before the next group starts on the
    background thread: both trace under the GIL, so starting them together delayed the first
    group's chains (README command 1's first group: 'compiled in' 1.3-1.7 s -> 0.7-1.1 s warm,
    3.5-4.3 s -> 1.8-2.2 s cold). The later groups are still prepared ahead."""
    import threading
    import time

    from collapse_jax.experiment import Prefetch

    events, lock = [], threading.Lock()

    def prepare(i):
        with lock:
            events.append(("start", i, threading.current_thread() is threading.main_thread()))
        time.sleep(0.2)
        with lock:
            events.append(("end", i))
        return i

    with Prefetch(prepare, [0, 1, 2]) as setups:
        assert setups.get(0) == 0
        time.sleep(0.5)  # group 0's chains run: group 1 is prepared meanwhile, off the main thread
        assert setups.get(1) == 1 and setups.get(2) == 2
    assert events.index(("end", 0)) < events.index(("start", 1, False)), events
    assert ("start", 2, False) in events
