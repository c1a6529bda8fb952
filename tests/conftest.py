"""Strict test configuration: set before any test traces.

- rank promotion raises (no silent broadcasting of mismatched ranks);
- dtype promotion is strict (no silent int->float or f32->f64 mixes);
- key reuse is checked (a typed key consumed twice raises);
- warnings are errors (pyproject's ``filterwarnings``);
- ``collapse-jax run`` uses no persistent compilation cache unless a test sets one.
"""

from __future__ import annotations

import os

import jax
import pytest

# CLI runs in tests compile afresh (no persistent cache in the user's home); a test of the cache
# sets its own directory
os.environ.setdefault("COLLAPSE_JAX_CACHE_DIR", "off")

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_debug_key_reuse", True)


@pytest.fixture
def key():
    return jax.random.key(0)
