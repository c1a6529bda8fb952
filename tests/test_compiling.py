"""Compiling once (``collapse_jax.compiling``): the program store a rerun loads without tracing,
what its key depends on, and the programs two groups share in one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import child_env, own_compilation_cache

import collapse_jax as cj
from collapse_jax import compiling, programs

#: A fresh process running ``collapse-jax run`` (``cli``) or ``run_experiment`` (``api``) that
#: prints the store's events and how many chain programs it traced (``programs.chain_key`` is
#: called only while tracing a chain program).
_RUN = """
import collections, json, sys
import jax
events = collections.Counter()
jax.monitoring.register_event_listener(lambda e, **k: events.update([e]))
import collapse_jax as cj
from collapse_jax import cli, compiling, programs
traced = []
key = programs.chain_key
programs.chain_key = lambda *a: traced.append(1) or key(*a)
exp = dict(name="store", model="linear_regression", regimes=("replace", "accumulate"), seeds=4,
           generations=4, n=(9,), d=3, n_test=8)
if sys.argv[1] == "cli":
    sets = ["seeds=4", "generations=4", "n=9", "d=3", "n_test=8", "regime=replace,accumulate"]
    assert cli.main(["run", "linear_regression", *[a for s in sets for a in ("--set", s)],
                     "--out", sys.argv[2], "--quiet", "--overwrite"]) == 0
else:
    cj.run_experiment(cj.Experiment(**exp)).table.to_csv(sys.argv[2] + ".csv", index=False)
print(json.dumps({"hits": events[compiling.HIT], "misses": events[compiling.MISS],
                  "traced": len(traced)}))
"""


def _run(kind: str, out, cache) -> dict:
    proc = subprocess.run([sys.executable, "-c", _RUN, kind, str(out)], capture_output=True,
                          text=True, timeout=600, check=False,
                          env=child_env(COLLAPSE_JAX_CACHE_DIR=str(cache),
                                        COLLAPSE_JAX_PROGRAM_STORE="on"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["cli", "api"])
def test_a_rerun_loads_its_programs_from_the_store_without_tracing(tmp_path, kind):
    """A second identical run in a new process, through the CLI or ``run_experiment``, loads
    every chain program from the store: no miss, no trace, the same table. The second process
    has lowered no linear algebra before running a loaded program that calls LAPACK, which
    crashed (a null LAPACK pointer) before the store prepared jaxlib's kernels."""
    cache = tmp_path / "cache"
    first = _run(kind, tmp_path / "a", cache)
    stored = sorted((cache / compiling.FOLDER).iterdir())
    assert first["hits"] == 0 and first["misses"] == len(stored) == 4, (first, stored)
    assert first["traced"] > 0
    second = _run(kind, tmp_path / "b", cache)
    assert second == {"hits": 4, "misses": 0, "traced": 0}, second
    assert sorted((cache / compiling.FOLDER).iterdir()) == stored
    table = "metrics.csv" if kind == "cli" else ".csv"
    a, b = (tmp_path / "a" / table, tmp_path / "b" / table) if kind == "cli" else (
        tmp_path / f"a{table}", tmp_path / f"b{table}")
    assert a.read_bytes() == b.read_bytes()


@pytest.fixture
def store(tmp_path, monkeypatch):
    """The store on, in a fresh cache directory of this process."""
    monkeypatch.setenv(compiling.ENV_STORE, "on")
    with own_compilation_cache():
        jax.config.update("jax_compilation_cache_dir", str(tmp_path / "cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        yield tmp_path / "cache" / compiling.FOLDER
    programs.clear_caches()


def _key(**change):
    static = cj.StaticConfig(model="gaussian", regime="replace", n0=8, n=8, d=2, generations=3)
    return compiling.program_key(change.get("recipe", ("init", "threefry2x32")),
                                 change.get("static", static), ("sig",), jax.devices()[:1], None)


def test_the_key_changes_with_the_code_the_environment_and_the_recipe(store, monkeypatch):
    base = _key()
    assert base is not None and base == _key()
    assert _key(recipe=("advance", "threefry2x32", 2)) != base
    assert _key(static=cj.StaticConfig(model="gaussian", regime="replace", n0=8, n=8, d=3,
                                       generations=3)) != base
    flags = os.environ.get("XLA_FLAGS", "")
    monkeypatch.setenv("XLA_FLAGS", f"{flags} --xla_cpu_use_thunk_runtime=true")
    assert _key() != base
    monkeypatch.setenv("XLA_FLAGS", flags)
    assert _key() == base
    with jax.default_matmul_precision("highest"):
        assert _key() != base
    monkeypatch.setattr(compiling, "_code_digest", lambda: "edited")
    assert _key() != base


def test_no_key_off_the_store_or_for_code_outside_collapse_jax(store, monkeypatch):
    """Not stored: a family registered by other code (its code is not in the fingerprint), a
    multi-process run, no cache directory, or the store turned off."""

    @cj.register_model("test_store_mean", source="gaussian", hparams={"sigma": 1.0},
                       metrics=("err",))
    def _factory(static):  # pragma: no cover - never built
        raise AssertionError

    try:
        outside = cj.StaticConfig(model="test_store_mean", regime="replace", n0=8, n=8, d=2,
                                  generations=3)
        assert _key(static=outside) is None
    finally:
        del cj.MODELS["test_store_mean"]
    assert _key() is not None
    count = jax.process_count
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    assert _key() is None
    monkeypatch.setattr(jax, "process_count", count)
    assert _key() is not None
    monkeypatch.setenv(compiling.ENV_STORE, "off")
    assert _key() is None
    monkeypatch.setenv(compiling.ENV_STORE, "on")
    jax.config.update("jax_compilation_cache_dir", None)
    assert _key() is None


def _sweep(regime="replace"):
    static = cj.StaticConfig(model="gaussian", regime=regime, n0=12, n=12, d=2, generations=4,
                             n_test=16)
    return cj.run_sweep(static, jax.random.key(3), np.arange(4), {"sigma": 1.0, "scale": 1.0},
                        {}).metrics


@pytest.fixture
def events():
    """The ``jax.monitoring`` events recorded during the test."""
    seen = []
    listen = lambda e, **k: seen.append(e)
    jax.monitoring.register_event_listener(listen)
    yield seen
    jax.monitoring.unregister_event_listener(listen)


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_an_unreadable_entry_is_removed_compiled_again_and_stored(store, events, caplog):
    first = _sweep()
    entries = sorted(store.iterdir())
    assert len(entries) == 2
    for path in entries:
        path.write_bytes(path.read_bytes()[:100])
    for path in store.parent.glob("jit_*"):  # and JAX's cache, so that XLA compiles again
        path.unlink()
    programs.clear_caches()
    events.clear()
    again = _sweep()
    assert events.count(compiling.MISS) == 2 and compiling.HIT not in events
    assert caplog.text.count("does not load") == 2
    _assert_same(first, again)
    assert sorted(store.iterdir()) == entries
    programs.clear_caches()
    events.clear()
    _assert_same(first, _sweep())
    assert events.count(compiling.HIT) == 2 and compiling.MISS not in events


def test_a_program_jax_s_cache_served_is_not_stored(store, events):
    """An executable loaded from JAX's cache re-serializes without part of its code (jaxlib
    0.10.2, CPU), so only programs XLA compiled in this process are stored."""
    first = _sweep()
    for path in store.iterdir():
        path.unlink()
    programs.clear_caches()
    events.clear()
    _assert_same(first, _sweep())
    assert events.count(compiling.MISS) == 2  # both chain programs, then served by JAX's cache
    assert events.count("/jax/compilation_cache/cache_hits") >= 2
    assert list(store.iterdir()) == []


def test_programs_lowered_to_the_same_text_share_one_executable(monkeypatch):
    """On the Gaussian's statistics pool ``replace`` and ``accumulate`` start from the same
    generation-0 program: the second group takes the first one's executable (one compile fewer
    with no cache, one cache load fewer with one)."""
    programs.clear_caches()
    compiles = []
    compile_ = jax.stages.Lowered.compile
    monkeypatch.setattr(jax.stages.Lowered, "compile",
                        lambda self, options=None: compiles.append(1) or compile_(self, options))
    _sweep("replace")
    assert len(compiles) == 2
    _sweep("accumulate")
    assert len(compiles) == 3  # its advance program only
    inits = {id(e) for e in compiling._EXECUTABLES.values()}
    assert len(inits) == 3


def test_chain_programs_are_named_after_the_code_that_built_them():
    """JAX's persistent cache keys a program by its module name too: naming the chain programs
    after the code digest keeps JAX's cache from serving a program compiled by other code (which
    the store could not keep), so after a change of collapse_jax XLA compiles afresh."""
    from collapse_jax.programs import _examples

    static = cj.StaticConfig(model="gaussian", regime="replace", n0=8, n=8, d=2, generations=3,
                             n_test=8)
    digest = compiling._code_digest()[:12]
    for role, (fn, example) in _examples(static, {}, 2, 2).items():
        assert f"jit_{role}_{digest}" in fn.lower(*example).as_text()


def test_the_store_keeps_its_most_recently_used_programs_within_its_bound(tmp_path):
    import time

    for i, name in enumerate("abcd"):
        (tmp_path / f"{name}.bin").write_bytes(b"x" * 100)
        os.utime(tmp_path / f"{name}.bin", (time.time() - 100 + i, time.time() - 100 + i))
    os.utime(tmp_path / "a.bin")  # loaded just now
    compiling._prune(tmp_path, 250)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "d.bin"]
    compiling._prune(tmp_path, 250)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "d.bin"]
