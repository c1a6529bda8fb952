"""Same config and seed give bit-identical numbers, however chains are batched."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import collapse_jax as cj
from collapse_jax.sweep import run_sweep


@pytest.mark.parametrize("model,regime,n,d", [
    ("gaussian", "accumulate_subsample", 6, 2),
    ("linear_regression", "accumulate", 8, 3),
])
def test_chunked_sweep_equals_unchunked_bitwise(model, regime, n, d):
    static = cj.StaticConfig(model=model, regime=regime, n0=n, n=n, d=d, generations=5,
                             n_test=8)
    ids = np.arange(7)
    hp = {k: np.linspace(v, 2 * v, 7, dtype=np.float32)
          for k, v in cj.MODELS[model].hparams.items()}
    root = jax.random.key(11)
    whole = run_sweep(static, root, ids, hp, {}, chunk_size=7)
    chunked = run_sweep(static, root, ids, hp, {}, chunk_size=3)  # 3 + 3 + 1 (padded)
    again = run_sweep(static, root, ids, hp, {}, chunk_size=7)
    for k in whole.metrics:
        np.testing.assert_array_equal(whole.metrics[k], chunked.metrics[k], err_msg=k)
        np.testing.assert_array_equal(whole.metrics[k], again.metrics[k], err_msg=k)
    # a chain's numbers depend on its id, not its position in the batch
    perm = np.array([6, 0, 5, 1, 4, 2, 3])
    shuffled = run_sweep(static, root, ids[perm], {k: v[perm] for k, v in hp.items()}, {},
                         chunk_size=7)
    for k in whole.metrics:
        np.testing.assert_array_equal(whole.metrics[k][perm], shuffled.metrics[k], err_msg=k)


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
