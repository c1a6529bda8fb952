"""Strict test configuration: set before any test traces.

- rank promotion raises (no silent broadcasting of mismatched ranks);
- dtype promotion is strict (no silent int->float or f32->f64 mixes);
- key reuse is checked (a typed key consumed twice raises);
- warnings are errors (pyproject's ``filterwarnings``);
- ``collapse-jax run`` uses no persistent compilation cache unless a test sets one;
- each test file's compiled programs are released after it (``_release_compiled_programs``).
"""

from __future__ import annotations

import os

import jax
import pytest

import collapse_jax

# CLI runs in tests compile afresh (no persistent cache in the user's home); a test of the cache
# sets its own directory
os.environ.setdefault("COLLAPSE_JAX_CACHE_DIR", "off")

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
