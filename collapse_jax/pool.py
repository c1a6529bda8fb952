"""The data pool: a fixed-capacity pytree with a validity mask, and the data regimes.

Every regime is a pure function ``Pool -> Pool`` with identical input and output shapes, so one
chain is a single ``lax.scan`` and many chains are one ``vmap``. The pool never grows: slots that
hold no data are marked invalid (and hold finite zeros, never NaN), and every statistic is
weighted by the mask.

Regimes (generation g is fit on the pool after g rounds of sampling; n synthetic per round):

- ``replace``: the pool is the n newest synthetic examples only. Capacity ``max(n0, n)``.
- ``accumulate``: D0 plus every synthetic example so far. Capacity ``n0 + (G - 1) n``.
- ``accumulate_subsample``: stored as ``accumulate``; each fit sees a uniform subsample without
  replacement of fixed size ``m`` (compute per generation fixed; Kazdan et al. 2024).

References:
    Gerstgrasser et al. 2024, "Is Model Collapse Inevitable?", arXiv:2404.01413.
    Kazdan et al. 2024, "Collapse or Thrive?", arXiv:2410.16713.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from collapse_jax.config import StaticConfig
from collapse_jax.types import Data, Hparams, PRNGKey


class Pool(NamedTuple):
    """Fixed-capacity data pool.

    Attributes:
        data: pytree with leaves ``[capacity, ...]``; invalid slots hold finite values.
        valid: ``[capacity]`` bool, which slots hold data the next fit may use.
        origin: ``[capacity]`` int32 generation tag: 0 = real (D0), g >= 1 = sampled from the model
            of generation g - 1; -1 for empty slots.
        count: int32 scalar, number of valid slots.
        overflow: bool scalar, set when a write did not fit (the write is dropped).
    """

    data: Data
    valid: Bool[Array, " capacity"]
    origin: Int[Array, " capacity"]
    count: Int[Array, ""]
    overflow: Bool[Array, ""]

    @property
    def capacity(self) -> int:
        return self.valid.shape[0]

    @property
    def weights(self) -> Float[Array, " capacity"]:
        """The mask as float32 weights, for mask-weighted statistics."""
        return self.valid.astype(jnp.float32)


def num_examples(data: Data) -> int:
    """Leading (example) axis length shared by every leaf of ``data``."""
    sizes = {leaf.shape[0] for leaf in jax.tree.leaves(data)}
    if len(sizes) != 1:
        raise ValueError(f"data leaves disagree on the example axis: sizes {sorted(sizes)}")
    return sizes.pop()


def init_pool(real: Data, capacity: int) -> Pool:
    """A pool holding ``real`` (tagged generation 0) in its first slots, the rest empty.

    >>> import jax.numpy as jnp
    >>> p = init_pool(jnp.ones((3, 2)), capacity=5)
    >>> p.valid.tolist(), int(p.count), p.data.shape
    ([True, True, True, False, False], 3, (5, 2))
    """
    n0 = num_examples(real)
    if n0 > capacity:
        raise ValueError(f"capacity={capacity} is smaller than the real data (n0={n0})")
    data = jax.tree.map(
        lambda x: jnp.zeros((capacity, *x.shape[1:]), x.dtype).at[:n0].set(x), real
    )
    valid = jnp.arange(capacity) < n0
    origin = jnp.where(valid, 0, -1).astype(jnp.int32)
    return Pool(data, valid, origin, jnp.int32(n0), jnp.bool_(False))


def write(pool: Pool, block: Data, start: Int[Array, ""], generation: Int[Array, ""]) -> Pool:
    """Write ``block`` (``[k, ...]``) into slots ``start .. start + k - 1``, marking them valid.

    A write that would run past the capacity is dropped entirely and sets ``overflow``.
    """
    k = num_examples(block)
    start = jnp.asarray(start, jnp.int32)
    fits = start + k <= pool.capacity
    safe = jnp.where(fits, start, 0)
    idx = jnp.arange(pool.capacity, dtype=jnp.int32)
    in_block = fits & (idx >= safe) & (idx < safe + k)

    def put(buf, x):
        # O(k): a dropped write puts the slots' old contents back (in place under XLA).
        old = jax.lax.dynamic_slice_in_dim(buf, safe, k, axis=0)
        x = jnp.where(fits, x.astype(buf.dtype), old)
        return jax.lax.dynamic_update_slice_in_dim(buf, x, safe, axis=0)

    data = jax.tree.map(put, pool.data, block)
    valid = pool.valid | in_block
    origin = jnp.where(in_block, jnp.asarray(generation, jnp.int32), pool.origin)
    return Pool(data, valid, origin, jnp.sum(valid, dtype=jnp.int32), pool.overflow | ~fits)


def sample_indices(key: PRNGKey, valid: Bool[Array, " capacity"], num: int) -> Int[Array, " num"]:
    """``num`` indices drawn uniformly with replacement from the valid slots.

    Works for any mask (not only prefixes) in O(capacity + num log capacity): an inverse-CDF draw on
    the cumulative count of valid slots. With no valid slot it returns index 0.
    """
    csum = jnp.cumsum(valid, dtype=jnp.int32)
    total = csum[-1]
    r = jax.random.randint(key, (num,), 0, jnp.maximum(total, 1), dtype=jnp.int32)
    return jnp.searchsorted(csum, r + 1, side="left").astype(jnp.int32)


def subsample_mask(
    key: PRNGKey, valid: Bool[Array, " capacity"], m: int
) -> Bool[Array, " capacity"]:
    """A mask of ``min(m, count)`` valid slots chosen uniformly without replacement."""
    scores = jnp.where(valid, jax.random.uniform(key, valid.shape), 2.0)
    _, idx = jax.lax.top_k(-scores, m)
    chosen = jnp.zeros(valid.shape, jnp.bool_).at[idx].set(True)
    return chosen & valid


def gather(data: Data, idx: Int[Array, " k"]) -> Data:
    """Rows ``idx`` of every leaf of ``data``."""
    return jax.tree.map(lambda x: x[idx], data)


def masked_mean(x: Float[Array, "capacity d"], w: Float[Array, " capacity"]) -> Float[Array, " d"]:
    """Mask-weighted mean of the rows of ``x`` (zero when the weights sum to zero)."""
    total = jnp.sum(w)
    return (w @ x) / jnp.maximum(total, jnp.finfo(x.dtype).tiny)


def masked_cov(
    x: Float[Array, "capacity d"], w: Float[Array, " capacity"], ddof: int = 0
) -> tuple[Float[Array, " d"], Float[Array, "d d"]]:
    """Mask-weighted mean and covariance, dividing the scatter by ``sum(w) - ddof``.

    >>> import jax.numpy as jnp
    >>> x = jnp.array([[0., 0.], [2., 2.], [99., 99.]])
    >>> mu, cov = masked_cov(x, jnp.array([1., 1., 0.]))
    >>> mu.tolist(), cov.tolist()
    ([1.0, 1.0], [[1.0, 1.0], [1.0, 1.0]])
    """
    mu = masked_mean(x, w)
    xc = x - mu[None, :]
    scatter = (xc * w[:, None]).T @ xc
    denom = jnp.maximum(jnp.sum(w) - ddof, jnp.finfo(x.dtype).tiny)
    return mu, scatter / denom


# ----------------------------------------------------------------------------------------------
# Regimes


class Regime(NamedTuple):
    """A data regime: how the pool changes between generations.

    Attributes:
        name: registry name.
        capacity: static pool capacity.
        n_synthetic: static number of examples sampled from each model.
        init: ``(real_train) -> Pool``, the pool generation 0 is fit on.
        update: ``(pool, synthetic, generation, key, hparams) -> Pool``, the pool generation
            ``generation`` is fit on, given ``synthetic`` sampled from generation - 1.
        view: ``(pool, key, hparams) -> Pool``, the part of the pool a fit sees (a mask).
    """

    name: str
    capacity: int
    n_synthetic: int
    init: Callable[[Data], Pool]
    update: Callable[[Pool, Data, Array, PRNGKey, Hparams], Pool]
    view: Callable[[Pool, PRNGKey, Hparams], Pool]


def _full_view(pool: Pool, key: PRNGKey, hparams: Hparams) -> Pool:
    del key, hparams
    return pool


def replace(n0: int, n: int, generations: int) -> Regime:
    """Each generation is fit on the newest ``n`` synthetic examples only."""
    del generations
    capacity = max(n0, n)

    def update(pool, synthetic, generation, key, hparams):
        del key, hparams
        empty = Pool(
            pool.data,
            jnp.zeros_like(pool.valid),
            jnp.full_like(pool.origin, -1),
            jnp.int32(0),
            pool.overflow,
        )
        return write(empty, synthetic, jnp.int32(0), generation)

    return Regime(
        "replace", capacity, n, lambda real: init_pool(real, capacity), update, _full_view
    )


def _accumulate_update(pool, synthetic, generation, key, hparams):
    del key, hparams
    return write(pool, synthetic, pool.count, generation)


def accumulate(n0: int, n: int, generations: int) -> Regime:
    """Each generation is fit on D0 plus all synthetic data so far."""
    capacity = n0 + max(generations - 1, 0) * n
    return Regime(
        "accumulate", capacity, n, lambda real: init_pool(real, capacity), _accumulate_update,
        _full_view,
    )


def accumulate_subsample(n0: int, n: int, generations: int, m: int | None = None) -> Regime:
    """Accumulate, but each fit sees ``m`` (default ``n0``) pool examples chosen uniformly."""
    base = accumulate(n0, n, generations)
    m = n0 if m is None else m
    if not 1 <= m <= base.capacity:
        raise ValueError(f"subsample={m} must lie in [1, capacity={base.capacity}]")

    def view(pool, key, hparams):
        del hparams
        mask = subsample_mask(key, pool.valid, m)
        return pool._replace(valid=mask, count=jnp.sum(mask, dtype=jnp.int32))

    return base._replace(name="accumulate_subsample", view=view)


#: name -> factory of a Regime from a StaticConfig (``collapse-jax list`` shows them).
REGIMES: dict[str, Callable[[StaticConfig], Regime]] = {
    "replace": lambda s: replace(s.n0, s.n, s.generations),
    "accumulate": lambda s: accumulate(s.n0, s.n, s.generations),
    "accumulate_subsample": lambda s: accumulate_subsample(s.n0, s.n, s.generations, s.subsample),
}


def make_regime(static: StaticConfig) -> Regime:
    """The regime a StaticConfig names."""
    return REGIMES[static.regime](static)
