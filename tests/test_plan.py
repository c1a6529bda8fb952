"""The planner (``collapse_jax.plan``): the memory estimate counts the largest temporary (also
inside loop bodies); chunk sizes follow the memory budget, keep at least two chains per device
where memory allows, and CPU batches are capped by bytes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import collapse_jax as cj
from collapse_jax.config import ConfigError
from collapse_jax.plan import bytes_per_chain, plan_sweep


def _static(model, regime, n, d, generations=6):
    return cj.StaticConfig(model=model, regime=regime, n0=n, n=n, d=d,
                           generations=generations, n_test=8)


def test_memory_estimate_counts_the_largest_temporary():
    """The KDE's test-by-pool kernel matrix (n_test x capacity float32) is far larger than its
    state; the estimate adds it (it used to count 4x the state only: ~16 KB per chain where
    ~46 KB were measured at n = n_test = 100), and it finds arrays inside loop bodies."""
    from collapse_jax import plan as S

    static = cj.StaticConfig(model="kde", regime="replace", n0=100, n=100, d=2, generations=3,
                             n_test=300)
    shapes = S.generation_shapes(static, {})
    kept = sum(S.nbytes(x) for x in jax.tree.leaves(shapes))
    assert kept < 300 * 100 * 4 / 4
    assert S.largest_temporary(static, {}, shapes) >= 300 * 100 * 4
    assert S.bytes_per_chain(static, {}) >= 4 * kept + 300 * 100 * 4

    def scanned(x):  # a [500, 500] intermediate only inside the scan body
        return jax.lax.scan(lambda c, _: (c, jnp.sum(jnp.outer(c, c))), x, None, length=3)

    jaxpr = jax.make_jaxpr(scanned)(jnp.zeros((500,), jnp.float32)).jaxpr
    assert S.largest_array(jaxpr) == 500 * 500 * 4


def test_memory_plan_names_chunk_size():
    static = _static("gaussian", "accumulate", 50, 4, generations=20)
    one = bytes_per_chain(static, {})
    plan = plan_sweep(static, {}, 10, budget=4 * one, devices=1)
    assert plan.chunk_size == 4 and plan.n_chunks == 3  # balanced: 4 + 4 + 2(pad)
    plan = plan_sweep(static, {}, 10, budget=4 * one, devices=2)
    assert plan.chunk_size % 2 == 0 and plan.chunk_size // 2 <= 4
    with pytest.raises(ConfigError, match=r"chunk_size: even one chain"):
        plan_sweep(static, {}, 10, budget=one // 2, devices=1)
    with pytest.raises(ConfigError, match=r"chunk_size=8: .*use chunk_size<=4"):
        plan_sweep(static, {}, 10, chunk_size=8, budget=4 * one, devices=1)
    # never a lone chain on a device when memory allows (a batch of one is lowered differently)
    assert plan_sweep(static, {}, 3, budget=4 * one, devices=8).chunk_size == 16
    assert plan_sweep(static, {}, 1, budget=4 * one, devices=1).chunk_size == 2
    assert plan_sweep(static, {}, 3, chunk_size=16, budget=4 * one, devices=8).chunk_size == 16
    assert plan_sweep(static, {}, 3, chunk_size=8, budget=4 * one, devices=8).chunk_size == 8
    assert plan_sweep(static, {}, 1, budget=one, devices=1).chunk_size == 1  # memory wins
    assert plan_sweep(static, {}, 5, chunk_size=1, budget=4 * one, devices=1).chunk_size == 1


def test_cpu_batches_are_capped_by_bytes(monkeypatch):
    """On CPU an automatic batch holds at most ``CPU_BATCH_BYTES`` of estimated chain memory
    (bigger batches ran up to 3.4x slower per chain-generation on 2 cores); an explicit
    ``chunk_size`` and ``CPU_BATCH_BYTES = None`` are not capped, nor is the memory budget."""
    from collapse_jax import plan as planmod

    static = _static("gaussian", "accumulate", 50, 4, generations=20)
    one = bytes_per_chain(static, {})
    monkeypatch.setattr(planmod, "CPU_BATCH_BYTES", 10 * one)
    plan = plan_sweep(static, {}, 25, budget=100 * one, devices=1)
    assert plan.chunk_size == 9 and plan.n_chunks == 3  # balanced: 9 + 9 + 7 (2 padded)
    assert plan_sweep(static, {}, 25, budget=100 * one, devices=1,
                      chunk_size=25).chunk_size == 25
    assert plan_sweep(static, {}, 25, budget=5 * one, devices=1).chunk_size == 5  # memory
    monkeypatch.setattr(planmod, "CPU_BATCH_BYTES", one // 2)  # never below two chains
    assert plan_sweep(static, {}, 25, budget=100 * one, devices=1).chunk_size == 2
    monkeypatch.setattr(planmod, "CPU_BATCH_BYTES", None)
    assert plan_sweep(static, {}, 25, budget=100 * one, devices=1).chunk_size == 25
