"""Drawing an m-subset of an accumulate pool's valid prefix, under vmap over chains.

The ``accumulate_subsample`` view draws ``m`` distinct slots uniformly from ``0 .. count - 1``
every generation. Compared here, each jitted and vmapped over ``--chains`` chains with a pool of
``--capacity`` slots (count = capacity, the last generation), for m in ``--m``:

- ``topk_mask``: the old view, a uniform score per slot of the capacity and ``lax.top_k`` (a
  mask over the capacity, not gathered);
- ``floyd_m2``: Floyd's algorithm as a ``fori_loop`` over the m steps, membership by comparing
  with the m slots chosen so far (O(m^2));
- ``floyd_scratch``: the same loop, membership in a capacity-sized boolean scratch mask (O(m)
  steps, an O(capacity) mask to clear per generation);
- ``floyd_vectorised``: ``pool.prefix_subsample``, the exact vectorised equivalent (one sort
  + pointer doubling, O(m log m), no loop over the m steps), sorting one combined int32 key;
- ``floyd_vectorised_2key``: the same with the two-operand stable sort (no capacity bound).

All Floyd variants return the same subset in the same order from the same key (checked
here). Median of ``--repeats`` calls after a warm-up; appends JSON lines to
``results/subsample.jsonl``.

    python benchmarks/bench_subsample.py --chains 100 --capacity 99100 --m 10,100,1000

References:
    Bentley & Floyd 1987, "Programming pearls: a sample of brilliance", CACM 30(9).
"""

from __future__ import annotations

import argparse
import json

import common
import jax
import jax.numpy as jnp
import numpy as np

from collapse_jax.pool import prefix_subsample, subsample_mask


def floyd_draws(key, count, m):
    """The draws of ``prefix_subsample``: t_i uniform in [0, j_i], j_i = count - m + i."""
    top = count - m + jnp.arange(m, dtype=jnp.int32)
    t = jax.random.randint(key, (m,), 0, jnp.maximum(top, 0) + 1, dtype=jnp.int32)
    return top, t


def floyd_m2(key, count, m, capacity):
    del capacity
    top, t = floyd_draws(key, count, m)
    slot = jnp.arange(m, dtype=jnp.int32)

    def body(i, chosen):
        seen = jnp.any((chosen == t[i]) & (slot < i))
        return chosen.at[i].set(jnp.where(seen, top[i], t[i]))

    chosen = jax.lax.fori_loop(0, m, body, jnp.full((m,), -1, jnp.int32))
    return jnp.where(count >= m, chosen, slot)


def floyd_scratch(key, count, m, capacity):
    top, t = floyd_draws(key, count, m)
    slot = jnp.arange(m, dtype=jnp.int32)

    def body(i, carry):
        taken, chosen = carry
        v = jnp.where(taken[t[i]], top[i], t[i])
        return taken.at[v].set(True), chosen.at[i].set(v)

    init = (jnp.zeros((capacity,), jnp.bool_), jnp.zeros((m,), jnp.int32))
    _, chosen = jax.lax.fori_loop(0, m, body, init)
    return jnp.where(count >= m, chosen, slot)


def floyd_vectorised(key, count, m, capacity):
    return prefix_subsample(key, count, m, capacity)


def floyd_vectorised_2key(key, count, m, capacity):
    del capacity  # no bound: the two-operand stable sort
    return prefix_subsample(key, count, m)


def topk_mask(key, count, m, capacity):
    return subsample_mask(key, jnp.arange(capacity) < count, m)


METHODS = {"topk_mask": topk_mask, "floyd_m2": floyd_m2, "floyd_scratch": floyd_scratch,
           "floyd_vectorised": floyd_vectorised, "floyd_vectorised_2key": floyd_vectorised_2key}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chains", type=int, default=100)
    p.add_argument("--capacity", type=int, default=99_100)
    p.add_argument("--m", default="10,100,1000")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-save", action="store_true")
    a = p.parse_args()
    env = common.environment()
    keys = jax.random.split(jax.random.key(0), a.chains)
    count = jnp.int32(a.capacity)
    rows = []
    for m in (int(v) for v in a.m.split(",")):
        outs = {}
        for name, fn in METHODS.items():
            f = jax.jit(jax.vmap(lambda k, fn=fn, m=m: fn(k, count, m, a.capacity)))
            outs[name] = np.asarray(jax.block_until_ready(f(keys)))
            t, _ = common.median_time(lambda f=f: f(keys), a.repeats)
            row = {"bench": "subsample", "method": name, "m": m, "chains": a.chains,
                   "capacity": a.capacity, "seconds": t, "us_per_chain": 1e6 * t / a.chains,
                   **env}
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("method", "m", "us_per_chain")}), flush=True)
            if not a.no_save:
                common.append_jsonl("subsample", row)
        ref = outs["floyd_m2"]
        for name in ("floyd_scratch", "floyd_vectorised", "floyd_vectorised_2key"):
            assert (outs[name] == ref).all(), name
        assert all(len(set(r)) == m for r in ref.tolist())
    print(common.table(rows, ["method", "m", "us_per_chain"], {"us_per_chain": ".1f"}))
    print(f"load average {env['loadavg']}")


if __name__ == "__main__":
    main()
