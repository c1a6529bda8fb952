"""The compiled programs (``collapse_jax.programs``): only the generation-0 program draws the
chains' real data; the advance program takes it as an argument.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import collapse_jax as cj
from collapse_jax.mesh import make_mesh
from collapse_jax.programs import program_jaxprs, program_size
from collapse_jax.validate import statics


def test_real_data_is_drawn_by_generation_zero_only(monkeypatch):
    """The advance program takes the chains' real data as an argument: only the generation-0
    program draws it. Drawing it again in every advance call made short calls cost more than
    their generations (linear regression, 10,000 chains, d = 32: 0.65 s per call for two
    100 x 32 designs per chain, against 0.02 s per generation)."""
    from collapse_jax import chain as C
    from collapse_jax import programs

    static = cj.StaticConfig(model="linear_regression", regime="replace", n0=9, n=9, d=3,
                             generations=5, n_test=7)
    draws = []
    real_draw = C.draw_real
    monkeypatch.setattr(C, "draw_real", lambda *a: draws.append(1) or real_draw(*a))
    mesh, impl = make_mesh(), "threefry2x32"
    state, real = programs.abstract_state(static, {}, 2, mesh)
    draws.clear()
    ids = jax.ShapeDtypeStruct((2,), jnp.int32)
    hp = {k: jax.ShapeDtypeStruct((2,), jnp.float32) for k in ("sigma", "noise_ratio")}
    root, g = jax.ShapeDtypeStruct((2,), jnp.uint32), jax.ShapeDtypeStruct((), jnp.int32)
    programs.advance_program(static, impl, mesh, 4).lower(state, real, g, g, root, ids, hp, {})
    assert draws == []
    programs.init_program(static, impl, mesh).lower(root, ids, hp, {})
    assert draws == [1]


BUDGET = json.loads((Path(__file__).parent / "program_budget.json").read_text())


@pytest.mark.parametrize("model", sorted(cj.MODELS))
def test_program_size_stays_within_twice_its_budget(model):
    """Compile time on CPU grows with a program's size: the ``init`` and ``advance`` programs of
    every family at its contract sizes (regime ``replace``, 2 chains) keep under twice the
    operation counts (``programs.program_size``) recorded in ``tests/program_budget.json``. A
    change that doubles one fails here; record the new sizes there when the growth is wanted (a
    new family records its own; ``benchmarks/compile_report.py`` prints them with compile
    seconds)."""
    assert model in BUDGET, f"{model}: no budget in tests/program_budget.json; record its sizes"
    ex = dict(cj.MODELS[model].example)
    options = ex.pop("options", {})
    static = statics(cj.Experiment(name="hlo", model=model, regimes=("replace",), seeds=2,
                                   generations=3, options=options, **ex))[0]
    jaxprs = program_jaxprs(static, cj.make_source(static).load(static))
    for name, jaxpr in jaxprs.items():
        size = program_size(jaxpr)
        assert size <= 2 * BUDGET[model][name], (
            f"{model} {name}: {size} operations, budget {BUDGET[model][name]} x 2")


def test_the_size_measure_sees_a_program_written_twice():
    """Negative control: generation 0 of a chain written out twice in one program measures about
    twice the size (a budget test on it would fail)."""
    from collapse_jax import chain as C

    static = cj.StaticConfig(model="gaussian", regime="replace", n0=16, n=16, d=2,
                             generations=3, n_test=16)
    chain = cj.make_chain(static)
    hp = cj.hparams_from({"sigma": 1.0, "scale": 1.0})

    def once(k):
        return C.init(chain, k, hp, C.draw_real(chain, k, hp, {}))

    one = program_size(jax.make_jaxpr(jax.jit(once))(jax.random.key(0)))
    two = program_size(jax.make_jaxpr(jax.jit(
        lambda k: (once(k), once(jax.random.fold_in(k, 1)))))(jax.random.key(0)))
    assert two >= 1.8 * one, (one, two)


def test_fast_compile_mode_passes_its_options_and_keeps_its_own_programs(monkeypatch):
    """``Experiment.compile = "fast"`` compiles the sweep's programs with
    ``compiling.COMPILER_OPTIONS["fast"]`` (LLVM level 0), as programs cached apart from the
    ``"optimized"`` ones, and gives the same chains to rounding (this suite already compiles at
    level 0 through ``XLA_FLAGS``, so here the two agree closely; ``benchmarks/compile_report.py``
    measures the compile-time difference). An unknown mode is refused naming the allowed ones."""
    import numpy as np

    from collapse_jax import compiling
    from collapse_jax.config import ConfigError

    seen = []
    compile_ = jax.stages.Lowered.compile

    def spy(self, compiler_options=None):
        seen.append(compiler_options)
        return compile_(self, compiler_options)

    monkeypatch.setattr(jax.stages.Lowered, "compile", spy)
    static = cj.StaticConfig(model="gaussian", regime="accumulate", n0=12, n=12, d=2,
                             generations=4, n_test=16)
    hp = {"sigma": 1.0, "scale": 1.0}
    out = {mode: cj.run_sweep(static, jax.random.key(3), np.arange(4), hp, {}, compile=mode)
           for mode in ("optimized", "fast")}
    fast = compiling.COMPILER_OPTIONS["fast"]
    assert seen == [None, None, fast, fast], seen  # init and advance of each mode
    assert compiling.COMPILER_OPTIONS["fast"] == {"xla_backend_optimization_level": 0}
    for name, v in out["optimized"].metrics.items():
        np.testing.assert_allclose(out["fast"].metrics[name], v, rtol=1e-4, err_msg=name)
    with pytest.raises(ConfigError, match=r"compile='fastest': unknown.*allowed: optimized, fast"):
        cj.validate(cj.Experiment(name="x", model="gaussian", compile="fastest"))


def test_a_groups_programs_compile_at_once_on_threads_and_only_once(monkeypatch):
    """``compile_sweep`` lowers a group's programs in turn, then compiles them concurrently (XLA
    releases the GIL, so init and advance take the longer one's time on two cores); a second
    sweep of the same shapes compiles nothing."""
    import threading
    import time

    import numpy as np

    from collapse_jax import programs

    programs.clear_caches()
    spans = []
    compile_ = jax.stages.Lowered.compile

    def spy(self, compiler_options=None):
        start = time.monotonic()
        time.sleep(0.3)  # long enough for the other thread to start too, if it runs at once
        out = compile_(self, compiler_options)
        spans.append((threading.current_thread().name, start, time.monotonic()))
        return out

    monkeypatch.setattr(jax.stages.Lowered, "compile", spy)
    static = cj.StaticConfig(model="gaussian", regime="replace", n0=12, n=12, d=2,
                             generations=4, n_test=16)
    hp = {"sigma": 1.0, "scale": 1.0}
    first = cj.run_sweep(static, jax.random.key(3), np.arange(4), hp, {})
    assert len(spans) == 2, spans  # init and advance
    assert all(name.startswith("collapse-jax-compile") for name, _, _ in spans), spans
    (_, a0, a1), (_, b0, b1) = spans
    assert max(a0, b0) < min(a1, b1), spans  # the two compiles overlapped in time
    again = cj.run_sweep(static, jax.random.key(3), np.arange(4), hp, {})
    assert len(spans) == 2, spans
    for name, v in first.metrics.items():
        np.testing.assert_array_equal(again.metrics[name], v, err_msg=name)
