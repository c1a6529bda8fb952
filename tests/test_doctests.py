"""Every example in the package's docstrings runs and prints what it shows, under the suite's
strict configuration (``tests/conftest.py``: rank and dtype promotion errors, key-reuse checks,
warnings as errors)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import collapse_jax

MODULES = sorted(m.name for m in pkgutil.walk_packages(collapse_jax.__path__, "collapse_jax."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    failures = []
    for test in doctest.DocTestFinder().find(module, name):
        out: list[str] = []
        result = runner.run(test, out=out.append)
        if result.failed:
            failures.append("".join(out))
    assert not failures, "\n".join(failures)


def test_every_module_is_found():
    """The walk sees the engine, the families and the data sources (a missing ``__init__`` or a
    renamed package would silently skip their examples)."""
    for name in ("collapse_jax.pool", "collapse_jax.chain", "collapse_jax.models.gaussian",
                 "collapse_jax.data.toy2d"):
        assert name in MODULES
