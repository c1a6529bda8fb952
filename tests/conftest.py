"""Strict test configuration: set before any test traces.

- rank promotion raises (no silent broadcasting of mismatched ranks);
- dtype promotion is strict (no silent int->float or f32->f64 mixes);
- key reuse is checked (a typed key consumed twice raises);
- warnings are errors (pyproject's ``filterwarnings``);
- ``collapse-jax run`` uses no persistent compilation cache unless a test sets one, and no
  program store (``COLLAPSE_JAX_PROGRAM_STORE=off``) unless a test of it turns it on;
- each test file's compiled programs are released after it (``_release_compiled_programs``);
- XLA's CPU backend compiles at LLVM optimisation level 0 (``TEST_XLA_FLAGS``; the tests' own
  subprocesses inherit it). Compiling dominates the suite and level 0 compiles a chain program
  2-3x faster (the contract tests of gmm, vae and categorical: 190 s -> 72 s); results differ from
  the default code generation in the last bits only (rounding order), which no test depends on.
  ``COLLAPSE_JAX_TEST_OPT=default`` runs the suite with XLA's default level instead.
- one CPU device (``COLLAPSE_JAX_CPU_DEVICES=1``, also in the tests' subprocesses; a run's
  default is one per core, ``collapse_jax/_xla.py``): the tests' expected batch sizes and
  bitwise comparisons are per device count, and the multi-device tests set their own count
  (``tests/test_sweep.py``, ``tests/test_mesh.py``, ``tests/test_xla.py``).
"""

from __future__ import annotations

import contextlib
import os

TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
if os.environ.get("COLLAPSE_JAX_TEST_OPT", "") != "default" and (
        "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

os.environ.setdefault("COLLAPSE_JAX_CPU_DEVICES", "1")

import jax  # noqa: E402  (after XLA_FLAGS: the CPU backend reads them when it starts)
import pytest  # noqa: E402

import collapse_jax  # noqa: E402

#: ``Lowered.compile`` options giving XLA's default CPU code generation (level 3) despite
#: ``TEST_XLA_FLAGS``, for the few tests whose claim is about that code (bitwise equalities,
#: float32 error bounds measured there).
XLA_DEFAULT_LEVEL = {"xla_backend_optimization_level": 3}

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_env(xla_flags: str = "", **extra: str) -> dict[str, str]:
    """Environment for a test's Python subprocess: this one's, without ``COLLAPSE_JAX_*``
    settings but the CPU device count and the program store's switch, on the CPU, importing this
    checkout; ``xla_flags`` are added to the inherited ``XLA_FLAGS`` (so the child compiles like
    this process, which bitwise comparisons need)."""
    kept = ("COLLAPSE_JAX_CPU_DEVICES", "COLLAPSE_JAX_PROGRAM_STORE")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAPSE_JAX_") or k in kept}
    flags = f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip()
    env.update(PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS=flags, **extra)
    return env

# CLI runs in tests compile afresh (no persistent cache in the user's home); a test of the cache
# sets its own directory
os.environ.setdefault("COLLAPSE_JAX_CACHE_DIR", "off")
# no program store (collapse_jax/compiling.py) unless a test of it turns it on: it would hand a
# test that patches collapse_jax's functions the program compiled before the patch
os.environ.setdefault("COLLAPSE_JAX_PROGRAM_STORE", "off")

#: ``tests/run_all.sh`` sets this to one directory for all its pytest processes: a program one
#: test file compiled (the same small configs recur across files) is loaded by the others from
#: JAX's persistent compilation cache instead of compiled again. Unset (a plain pytest call): no
#: cache. The executables are the same machine code either way.
TEST_CACHE = os.environ.get("COLLAPSE_JAX_TEST_CACHE", "")
if TEST_CACHE:
    jax.config.update("jax_compilation_cache_dir", TEST_CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


@contextlib.contextmanager
def own_compilation_cache():
    """Within: no persistent compilation cache configured (a test of the cache sets its own
    directory); the suite's setting is restored after."""
    from jax._src import compilation_cache

    before = (jax.config.jax_compilation_cache_dir,
              jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()
    try:
        yield
    finally:
        jax.config.update("jax_compilation_cache_dir", before[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
        compilation_cache.reset_cache()


jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_debug_key_reuse", True)


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """After each test file, drop the compiled programs it made (``collapse_jax.clear_caches``).

    Each compiled program holds its machine code in memory maps (~200 for a chain program on
    CPU), and a process may hold at most ``vm.max_map_count`` (65,530) of them: a single pytest
    process over the whole suite used to fail after a few hundred programs with "LLVM
    compilation error: Cannot allocate memory". Programs are shared within a file, not across.
    """
    yield
    collapse_jax.clear_caches()


class Boom(RuntimeError):
    """A simulated failure (``fail_group``)."""


def fail_group(monkeypatch, group: int, is_group):
    """Make ``experiment.prepare_sweep`` raise ``Boom`` for the group whose StaticConfig
    satisfies ``is_group`` (``group``: its 0-based index, for the message); the others run.
    Groups are recognised by their config, not by call order: the run prepares the next group on
    a background thread while one runs. Returns the list of configs prepared so far."""
    from collapse_jax import experiment

    real, calls = experiment.prepare_sweep, []

    def flaky(static, *args, **kwargs):
        calls.append(static)
        if is_group(static):
            raise Boom(f"simulated crash in group {group} (n={static.n})")
        return real(static, *args, **kwargs)

    monkeypatch.setattr(experiment, "prepare_sweep", flaky)
    return calls
