"""Type aliases shared by the engine.

Shapes in docstrings follow the ``[capacity, d]`` convention; ``jaxtyping`` annotations are used
where they help the reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, TypeAlias

import jax

Array: TypeAlias = jax.Array
ArrayLike: TypeAlias = jax.typing.ArrayLike
PRNGKey: TypeAlias = jax.Array  # a typed key, ``jax.random.key(seed)``
PyTree: TypeAlias = Any
Data: TypeAlias = PyTree  # a pytree whose leaves share a leading example axis
Params: TypeAlias = PyTree
Hparams: TypeAlias = Mapping[str, jax.Array]  # float32 scalars per chain; vmapped in sweeps
Metrics: TypeAlias = dict[str, jax.Array]  # float32 scalars per generation


class RealData(NamedTuple):
    """The real data one chain sees.

    Attributes:
        train: D0, a pytree with leaves ``[n0, ...]``; generation 0 is fit on it.
        test: held-out real data, leaves ``[n_test, ...]``; every generation is evaluated on it.
        truth: parameters of the true distribution when known (e.g. ``{"mean", "cov"}``), else
            an empty dict.

    >>> import jax
    >>> from collapse_jax import StaticConfig, hparams_from, make_source
    >>> static = StaticConfig("linear_regression", "replace", n0=12, n=12, d=3, generations=2,
    ...                       n_test=16)
    >>> draw = lambda k: make_source(static).draw(k, hparams_from({"sigma": 10.0}), {})
    >>> real = jax.eval_shape(draw, jax.random.key(0))  # shapes only, nothing runs
    >>> jax.tree.map(lambda x: x.shape, (real.train, real.test["y"], real.truth["w"]))
    ({'x': (12, 3), 'y': (12,)}, (16,), (3,))
    """

    train: Data
    test: Data
    truth: PyTree
