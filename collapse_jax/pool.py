"""The data pool: a fixed-capacity pytree with a validity mask, and the masked statistics on it.

The pool never grows: slots that hold no data are marked invalid (and hold finite zeros, never
NaN), and every statistic is weighted by the mask. Writes are O(block) dynamic updates; index
sampling (with replacement from any mask, without replacement from a valid prefix) never reads an
invalid slot. How the pool changes between generations (the data regimes) is ``regimes.py``.

References:
    Gerstgrasser et al. 2024, "Is Model Collapse Inevitable?", arXiv:2404.01413.
    Kazdan et al. 2024, "Collapse or Thrive?", arXiv:2410.16713.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from collapse_jax import linalg
from collapse_jax.types import Data, PRNGKey


class Pool(NamedTuple):
    """Fixed-capacity data pool.

    Attributes:
        data: pytree with leaves ``[capacity, ...]``; invalid slots hold finite values.
        valid: ``[capacity]`` bool, which slots hold data the next fit may use.
        origin: ``[capacity]`` int32 generation tag: 0 = real (D0), g >= 1 = sampled from the model
            of generation g - 1; -1 for empty slots.
        count: int32 scalar, number of valid slots.
        overflow: bool scalar, set when a write did not fit (the write is dropped).

    >>> import jax.numpy as jnp
    >>> p = init_pool({"x": jnp.ones((2, 3)), "y": jnp.ones((2,))}, capacity=4)
    >>> p.capacity, p.data["x"].shape, p.origin.tolist(), p.weights.dtype, bool(p.overflow)
    (4, (4, 3), [0, 0, -1, -1], dtype('float32'), False)
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

    A write that would run past the capacity is dropped entirely and sets ``overflow``. O(k):
    data, mask and tags are updated by ``dynamic_update_slice`` (in place under XLA) and the count
    by the number of newly valid slots, so appending to a large pool does not touch its other
    slots (requires ``pool.count == sum(pool.valid)``, which every regime keeps).

    >>> import jax.numpy as jnp
    >>> p = write(init_pool(jnp.zeros((2, 1)), 5), jnp.ones((2, 1)), jnp.int32(3), jnp.int32(1))
    >>> p.valid.tolist(), p.origin.tolist(), int(p.count)
    ([True, True, False, True, True], [0, 0, -1, 1, 1], 4)
    """
    k = num_examples(block)
    start = jnp.asarray(start, jnp.int32)
    fits = start + k <= pool.capacity
    safe = jnp.where(fits, start, 0)

    def put(buf, x):
        # a dropped write puts the slots' old contents back
        old = jax.lax.dynamic_slice_in_dim(buf, safe, k, axis=0)
        x = jnp.where(fits, x.astype(buf.dtype), old)
        return jax.lax.dynamic_update_slice_in_dim(buf, x, safe, axis=0)

    data = jax.tree.map(put, pool.data, block)
    was_valid = jax.lax.dynamic_slice_in_dim(pool.valid, safe, k)
    valid = put(pool.valid, jnp.ones((k,), jnp.bool_))
    origin = put(pool.origin, jnp.full((k,), generation, jnp.int32))
    added = jnp.where(fits, k - jnp.sum(was_valid, dtype=jnp.int32), 0)
    return Pool(data, valid, origin, pool.count + added, pool.overflow | ~fits)


def sample_indices(key: PRNGKey, valid: Bool[Array, " capacity"], num: int) -> Int[Array, " num"]:
    """``num`` indices drawn uniformly with replacement from the valid slots.

    Works for any mask (not only prefixes) in O(capacity + num log capacity): an inverse-CDF draw on
    the cumulative count of valid slots. With no valid slot it returns index 0.
    """
    csum = jnp.cumsum(valid, dtype=jnp.int32)
    total = csum[-1]
    r = jax.random.randint(key, (num,), 0, jnp.maximum(total, 1), dtype=jnp.int32)
    return jnp.searchsorted(csum, r + 1, side="left").astype(jnp.int32)


def prefix_subsample(
    key: PRNGKey, count: ArrayLike, m: int, capacity: int | None = None
) -> Int[Array, " m"]:
    """``m`` distinct indices drawn uniformly without replacement from ``0 .. count - 1``.

    Floyd's algorithm (Bentley & Floyd 1987): for ``j = count - m .. count - 1`` draw ``t``
    uniform in ``[0, j]``; take ``t`` unless it was taken already, else take ``j``. Every
    m-subset is equally likely, and only ``m`` random integers are drawn whatever the capacity.

    The sequential loop is replaced by an exact vectorised equivalent (the same subset, in the
    same order, as the loop given the same draws ``t``). Write ``j0 = count - m`` and ``c_i`` for
    "step i collides". A value ``v < j0`` is taken by the first step that draws it, so it is
    taken before step ``i`` iff some earlier step drew it. A value ``j_k`` (``k < i``) is taken
    before step ``i`` iff step ``k`` collided or some step ``l`` in ``[k, i)`` drew it; no step
    before ``k`` can draw ``j_k`` (``t_l <= j_l < j_k``). Hence

        c_i = prev_i or (t_i >= j0 and c_{t_i - j0}),   prev_i = (t_l == t_i for some l < i),

    a recursion along pointers ``i -> t_i - j0 <= i`` (``t_i = j_i`` cannot collide). ``prev``
    comes from one stable sort of ``t``; the recursion is an OR along each pointer chain, resolved
    by pointer doubling in ``ceil(log2 m)`` rounds. O(m log m) work, no loop over ``m`` steps,
    no capacity-sized scratch, and no O(m^2) membership tests (``benchmarks/bench_subsample.py``
    measures the alternatives).

    When ``count < m`` it returns ``0 .. m - 1``; the caller masks the indices ``>= count``.

    Args:
        key: PRNG key.
        count: int32 scalar, the number of valid slots (a valid prefix of the pool).
        m: static subset size.
        capacity: optional static bound on ``count``. When ``capacity * m < 2^31`` the stable
            sort runs on one int32 key ``t m + i`` (unique, so any sort is stable): on XLA CPU
            several times faster than a two-operand stable sort, with the same result.

    Returns:
        ``[m]`` int32 distinct indices, each in ``[0, count)`` when ``count >= m``.

    >>> import jax, jax.numpy as jnp
    >>> idx = prefix_subsample(jax.random.key(0), jnp.int32(10), 4)
    >>> len(set(idx.tolist())), bool((idx < 10).all())
    (4, True)
    >>> prefix_subsample(jax.random.key(0), jnp.int32(2), 4).tolist()  # count < m
    [0, 1, 2, 3]

    References:
        Bentley & Floyd 1987, "Programming pearls: a sample of brilliance", Communications of
            the ACM 30(9), 754-757.
        Hillis & Steele 1986, "Data parallel algorithms", Communications of the ACM 29(12)
            (pointer doubling).
    """
    count = jnp.asarray(count, jnp.int32)
    slot = jnp.arange(m, dtype=jnp.int32)
    j0 = count - m
    top = j0 + slot  # j_i
    t = jax.random.randint(key, (m,), 0, jnp.maximum(top, 0) + 1, dtype=jnp.int32)
    # prev_i: an earlier step drew the same value (stable sort by value, compare neighbours)
    if capacity is not None and capacity * m < 2**31:
        packed = jax.lax.sort(t * m + slot)
        t_sorted, order = packed // m, packed % m
    else:
        t_sorted, order = jax.lax.sort((t, slot), num_keys=1, is_stable=True)
    dup = jnp.concatenate([jnp.zeros((1,), jnp.bool_), t_sorted[1:] == t_sorted[:-1]])
    prev = jnp.zeros((m,), jnp.int32).at[order].set(dup.astype(jnp.int32), unique_indices=True)
    # c_i |= c_{t_i - j0} along the pointer chains (a step with t_i < j0 ends its chain: a self
    # pointer), by pointer doubling. Pointer and flag share one int32 (ptr * 2 + c), so each round
    # is one gather: g = state[ptr_i] gives ptr_{ptr_i} and c_{ptr_i} at once.
    ptr = jnp.where(t >= j0, t - j0, slot)
    state = ptr * 2 + prev
    state = jax.lax.fori_loop(  # a loop, not unrolled: one gather to compile, not log2(m)
        0, max(1, (m - 1).bit_length()), lambda _, st: st[st >> 1] | (st & 1), state)
    chosen = jnp.where((state & 1) == 1, top, t)
    return jnp.where(count >= m, chosen, slot)


def subsample_mask(
    key: PRNGKey, valid: Bool[Array, " capacity"], m: int
) -> Bool[Array, " capacity"]:
    """A mask of ``min(m, count)`` valid slots chosen uniformly without replacement.

    Works for any mask (not only a valid prefix), in O(capacity log m): a random score per slot
    and ``top_k``. For an accumulate pool (a valid prefix) ``prefix_subsample`` draws the subset
    in O(m log m).
    """
    scores = jnp.where(valid, jax.random.uniform(key, valid.shape), 2.0)
    _, idx = jax.lax.top_k(-scores, m)
    chosen = jnp.zeros(valid.shape, jnp.bool_).at[idx].set(True)
    return chosen & valid


def gather(data: Data, idx: Int[Array, " k"]) -> Data:
    """Rows ``idx`` of every leaf of ``data``."""
    return jax.tree.map(lambda x: x[idx], data)


def safe_reciprocal(total: Float[Array, ""]) -> Float[Array, ""]:
    """``1 / max(total, tiny)``: the normaliser of a mask-weighted statistic, computed once.

    Statistics multiply by this reciprocal instead of dividing by a broadcast ``total``, so the
    program fixes the arithmetic. XLA's CPU algebraic simplifier rewrites ``a / broadcast(b)``
    into ``a * broadcast(1 / b)`` only when ``b`` has a single use; the SPMD partitioner runs CSE
    before that pass (merging the mean's and the covariance's identical denominators into one
    value with two uses), so a single-device program multiplied by the reciprocal while the same
    program sharded over several devices divided, and the results differed in the last ulp. With
    the reciprocal written out both programs compute the same operations (bit-identical on 1 or N
    devices; tests/test_sweep.py).

    >>> import jax.numpy as jnp
    >>> float(safe_reciprocal(jnp.float32(4.0)))
    0.25
    >>> bool(jnp.isfinite(safe_reciprocal(jnp.float32(0.0))))  # an empty mask: finite
    True
    """
    return 1.0 / jnp.maximum(total, jnp.finfo(total.dtype).tiny)


def masked_mean(x: Float[Array, "capacity d"], w: Float[Array, " capacity"]) -> Float[Array, " d"]:
    """Mask-weighted mean of the rows of ``x`` (zero when the weights sum to zero)."""
    return (w @ x) * safe_reciprocal(jnp.sum(w))


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
    return mu, scatter * safe_reciprocal(jnp.sum(w) - ddof)


def masked_root(
    x: Float[Array, "capacity d"], w: Float[Array, " capacity"], ddof: int = 0
) -> tuple[Float[Array, " d"], Float[Array, "d d"]]:
    """Mask-weighted mean and a lower-triangular root ``R`` of ``masked_cov``'s covariance.

    ``R R^T = cov``, from a QR of the centred rows scaled by ``sqrt(w)`` (``linalg.qr_r``), not a
    factorisation of the scatter: the scatter squares the condition number, so in float32 a
    covariance whose eigenvalues span more than ~1e6 loses its smallest directions (a Cholesky of
    it has nothing left to factor), while the QR keeps them to a few ulps of the rows. Fewer rows
    than dimensions (a singular covariance) give zero columns. The diagonal of ``R`` may be
    negative; ``log det cov = sum(log(diag(R)^2))``.

    >>> import jax.numpy as jnp
    >>> x = jnp.array([[0., 0.], [2., 2.], [99., 99.]])
    >>> mu, r = masked_root(x, jnp.array([1., 1., 0.]))
    >>> mu.tolist(), [[round(abs(v), 6) for v in row] for row in (r @ r.T).tolist()]
    ([1.0, 1.0], [[1.0, 1.0], [1.0, 1.0]])
    """
    d = x.shape[1]
    mu = masked_mean(x, w)
    xc = (x - mu[None, :]) * jnp.sqrt(w)[:, None]
    r = linalg.qr_r(xc)  # [min(capacity, d), d], r^T r = scatter
    root = jnp.zeros((d, d), x.dtype).at[:, : r.shape[0]].set(r.T)
    return mu, root * jnp.sqrt(safe_reciprocal(jnp.sum(w) - ddof))


def pool_metrics(view: Pool) -> dict[str, Array]:
    """Size of the pool a fit saw and the fraction of it that is real data (mask weighted)."""
    w = view.weights
    real = jnp.sum(jnp.where(view.origin == 0, w, 0.0))
    size = jnp.sum(w)
    return {"pool_size": size, "real_fraction": real / jnp.maximum(size, 1.0)}


# ----------------------------------------------------------------------------------------------
# Origin weights and weighted index sampling (helpers for the model families)


def origin_weights(pool: Pool, real_weight: ArrayLike = 1.0) -> Float[Array, " capacity"]:
    """Fit weights: the mask, with real slots (origin 0) multiplied by ``real_weight``.

    ``real_weight`` (a float32 hyperparameter of the classical families) fixes the effective
    real:synthetic ratio of a fit without changing shapes; 1.0 gives ``pool.weights``.

    >>> import jax.numpy as jnp
    >>> p = init_pool(jnp.zeros((2, 1)), capacity=3)
    >>> p = write(p, jnp.ones((1, 1)), jnp.int32(2), jnp.int32(1))
    >>> origin_weights(p, 3.0).tolist()
    [3.0, 3.0, 1.0]
    """
    rw = jnp.asarray(real_weight, jnp.float32)
    return pool.weights * jnp.where(pool.origin == 0, rw, jnp.float32(1.0))


def sample_weighted_indices(
    key: PRNGKey, w: Float[Array, " capacity"], num: int
) -> Int[Array, " num"]:
    """``num`` indices drawn with replacement with probability proportional to ``w >= 0``.

    Inverse CDF on the cumulative weights (``weighted_indices`` of ``num`` uniforms); slots of
    weight 0 are never drawn (index ``capacity - 1`` when all weights are 0).
    """
    return weighted_indices(jax.random.uniform(key, (num,), w.dtype), w)


def weighted_indices(u: Float[Array, " num"], w: Float[Array, " capacity"]) -> Int[Array, " num"]:
    """Indices with probability proportional to ``w >= 0``, from uniforms ``u`` in ``[0, 1)``.

    The inverse CDF of ``sample_weighted_indices``, for a caller that draws its uniforms together
    with other random numbers (one random-number call instead of several).

    Args:
        u: ``[num]`` uniforms in ``[0, 1)``.
        w: ``[capacity]`` weights >= 0.

    Returns:
        ``[num]`` int32 indices: the first slot whose cumulative weight exceeds ``u * sum(w)``.

    >>> import jax.numpy as jnp
    >>> weighted_indices(jnp.array([0.0, 0.3, 0.9]), jnp.array([1.0, 0.0, 2.0, 1.0])).tolist()
    [0, 2, 3]

    References:
        Devroye 1986, "Non-Uniform Random Variate Generation", ch. III.2 (inversion by search).
    """
    csum = jnp.cumsum(w)
    idx = jnp.searchsorted(csum, u.astype(csum.dtype) * csum[-1], side="right")
    return jnp.minimum(idx, w.shape[0] - 1).astype(jnp.int32)
