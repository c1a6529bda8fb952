"""The data pool: a fixed-capacity pytree with a validity mask, and the data regimes.

Every regime is a pure function ``Pool -> Pool`` with identical input and output shapes, so one
chain is a single ``lax.scan`` and many chains are one ``vmap``. The pool never grows: slots that
hold no data are marked invalid (and hold finite zeros, never NaN), and every statistic is
weighted by the mask.

Regimes (generation g is fit on the pool after g rounds of sampling; n synthetic per round):

- ``replace``: the pool is the n newest synthetic examples only. Capacity ``max(n0, n)``.
- ``accumulate``: D0 plus every synthetic example so far. Capacity ``n0 + (G - 1) n``.
- ``accumulate_subsample``: stored as ``accumulate``; each fit sees a uniform subsample without
  replacement of fixed size ``m`` (compute per generation fixed; Kazdan et al. 2024), gathered
  into a pool of capacity ``m`` (``Regime.view_capacity``), so a fit costs O(m) whatever the
  accumulated pool's size.
- ``fixed_real_mix``: D0 plus ``round(lam * n0)`` fresh synthetic examples; older synthetic data is
  dropped (Bertrand et al. 2023). ``lam`` is a hyperparameter in ``[0, lam_max]``; the static
  ``ceil(lam_max * n0)`` examples are sampled every generation and the first ``round(lam * n0)``
  are marked valid, so a sweep over ``lam`` compiles once. Capacity ``n0 + ceil(lam_max n0)``.
- ``fresh_real_mix``: each generation's training set has ``n`` examples, the first
  ``round(rho * n)`` fresh real data drawn from the source (``Source.fresh``), the rest synthetic
  (Alemohammad et al. 2023, "fresh data loop"). ``rho`` is a hyperparameter in ``[0, 1]``.
  Capacity ``max(n0, n)``. Fresh real slots are tagged origin 0 (real).
- ``window``: accumulate, keeping only the synthetic data of the last ``k`` generations (static
  ``window``), with D0 kept or not (static ``window_keep_real``): a ring buffer of ``k`` blocks of
  ``n`` slots after D0. Capacity ``n0 + k n`` (with D0) or ``max(n0, k n)`` (without).

Regime hyperparameters (``REGIME_HPARAMS``) live in the same ``hparams`` dict as the model's and
are vmapped the same way. ``origin_weights`` turns the origin tags into fit weights (real data
up- or down-weighted by a factor), for a fixed real:synthetic ratio inside one pool.

References:
    Gerstgrasser et al. 2024, "Is Model Collapse Inevitable?", arXiv:2404.01413.
    Kazdan et al. 2024, "Collapse or Thrive?", arXiv:2410.16713.
    Bertrand et al. 2023, "On the Stability of Iterative Retraining of Generative Models on their
        own Data", arXiv:2310.00429.
    Alemohammad et al. 2023, "Self-Consuming Generative Models Go MAD", arXiv:2307.01850.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from collapse_jax import linalg
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
    devices; tests/test_scale.py).

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
# Regimes


class Regime(NamedTuple):
    """A data regime: how the pool changes between generations.

    Attributes:
        name: registry name.
        capacity: static pool capacity.
        n_synthetic: static number of examples sampled from each model.
        init: ``(real_train) -> Pool``, the pool generation 0 is fit on.
        update: ``(pool, synthetic, generation, key, hparams) -> Pool``, the pool generation
            ``generation`` is fit on, given ``synthetic`` sampled from generation - 1. A regime
            with ``n_fresh > 0`` also takes ``fresh=``, a block of ``n_fresh`` new real examples
            (the chain draws it with ``Source.fresh``).
        view: ``(pool, key, hparams) -> Pool``, the part of the pool a fit sees: the pool
            itself, or the chosen rows gathered into a pool of capacity ``view_capacity``
            (``accumulate_subsample``).
        n_fresh: static number of fresh real examples the update needs (0 = none).
        metrics: ``(view) -> {"pool_size", "real_fraction"}``; a pool that stores summaries
            instead of examples (e.g. the Gaussian's sufficient statistics) overrides it.
        view_capacity: static capacity of the pool ``view`` returns (None: ``capacity``); read
            it through ``fit_capacity``.
    """

    name: str
    capacity: int
    n_synthetic: int
    init: Callable[[Data], Pool]
    update: Callable[..., Pool]
    view: Callable[[Pool, PRNGKey, Hparams], Pool]
    n_fresh: int = 0
    metrics: Callable[[Pool], dict[str, Array]] = pool_metrics
    view_capacity: int | None = None

    @property
    def fit_capacity(self) -> int:
        """Static capacity of the pools a fit sees (``view_capacity``, else ``capacity``).

        >>> accumulate_subsample(n0=4, n=2, generations=5).fit_capacity  # m = n0
        4
        """
        return self.capacity if self.view_capacity is None else self.view_capacity


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


def accumulate(n0: int, n: int, generations: int) -> Regime:
    """Each generation is fit on D0 plus all synthetic data so far."""
    capacity = n0 + max(generations - 1, 0) * n

    def update(pool, synthetic, generation, key, hparams):
        # The write position follows from the generation (the same for every chain), not from
        # pool.count: under vmap the write stays an in-place dynamic_update_slice instead of a
        # scatter over the whole batch of pools. Equal to pool.count while nothing overflowed.
        del key, hparams
        start = n0 + (jnp.asarray(generation, jnp.int32) - 1) * n
        return write(pool, synthetic, start, generation)

    def metrics(view):
        # O(1): the pool is a valid prefix whose first n0 slots are the real data
        size = view.count.astype(jnp.float32)
        return {"pool_size": size, "real_fraction": jnp.float32(n0) / jnp.maximum(size, 1.0)}

    return Regime(
        "accumulate", capacity, n, lambda real: init_pool(real, capacity), update, _full_view,
        metrics=metrics,
    )


def accumulate_subsample(n0: int, n: int, generations: int, m: int | None = None) -> Regime:
    """Accumulate, but each fit sees ``m`` (default ``n0``) pool examples chosen uniformly.

    The view is a pool of capacity ``m`` holding the chosen rows (``prefix_subsample``); while
    fewer than ``m`` slots are valid it holds the first ``m`` slots, those ``>= count`` invalid.

    >>> import jax, jax.numpy as jnp
    >>> r = accumulate_subsample(n0=3, n=2, generations=4, m=4)
    >>> p = r.update(r.init(jnp.zeros((3, 1))), jnp.ones((2, 1)), jnp.int32(1), None, {})
    >>> v = r.view(p, jax.random.key(0), {})
    >>> r.capacity, v.capacity, int(v.count), sorted(v.origin.tolist()).count(0) >= 2
    (9, 4, 4, True)
    """
    base = accumulate(n0, n, generations)
    m = n0 if m is None else m
    if not 1 <= m <= base.capacity:
        raise ValueError(f"subsample={m} must lie in [1, capacity={base.capacity}]")

    def view(pool, key, hparams):
        # The m chosen rows gathered into a pool of capacity m, so a fit costs O(m), not
        # O(capacity). An accumulate pool is a valid prefix (writes at n0 + (g - 1) n; a dropped
        # write leaves it one), so Floyd's algorithm draws the subset from pool.count alone.
        del hparams
        idx = prefix_subsample(key, pool.count, m, base.capacity)
        valid = idx < pool.count
        origin = jnp.where(valid, pool.origin[idx], -1).astype(jnp.int32)
        return Pool(gather(pool.data, idx), valid, origin, jnp.sum(valid, dtype=jnp.int32),
                    pool.overflow)

    return base._replace(name="accumulate_subsample", view=view, view_capacity=m,
                         metrics=pool_metrics)


#: Default values of the regimes' hyperparameters (vmappable float32, like a model's).
REGIME_HPARAMS: dict[str, dict[str, float]] = {
    "fixed_real_mix": {"lam": 1.0},
    "fresh_real_mix": {"rho": 0.5},
}


def statistics_regime(
    regime: str, n: int, summarize: Callable[[Data], Data], merge: Callable[[Data, Data], Data]
) -> Regime:
    """``replace`` or ``accumulate`` over a one-slot pool holding sufficient statistics.

    For a model whose fit depends on its pool only through statistics that add up over
    disjoint blocks (a model's exact fast path, ``GenerativeModel.regime``): ``summarize(rows)``
    gives the statistics of the real data as a one-slot block (leading axis 1, with ``count``
    and ``real``: the number of rows and of real rows), the model's ``sample`` returns such a
    block for its ``n`` synthetic rows, and ``merge(a, b)`` the statistics of the union. The
    pool stays O(statistics) whatever the generation, where ``accumulate``'s grows by ``n``
    rows each. ``pool_size`` and ``real_fraction`` are those of the rows summarised.

    >>> import jax.numpy as jnp
    >>> total = lambda x: {"count": jnp.full((1,), x.shape[0], jnp.float32),
    ...                    "real": jnp.full((1,), x.shape[0], jnp.float32), "sum": x.sum(0)[None]}
    >>> add = lambda a, b: jax.tree.map(jnp.add, a, b)
    >>> r = statistics_regime("accumulate", 2, total, add)
    >>> block = {"count": jnp.full((1,), 2.0), "real": jnp.zeros((1,)), "sum": jnp.ones((1, 1))}
    >>> p = r.update(r.init(jnp.ones((3, 1))), block, jnp.int32(1), None, {})
    >>> float(p.data["sum"][0, 0]), {k: round(float(v), 6) for k, v in r.metrics(p).items()}
    (4.0, {'pool_size': 5.0, 'real_fraction': 0.6})
    """
    if regime not in ("replace", "accumulate"):
        raise ValueError(f"regime={regime!r}: a statistics pool supports replace, accumulate")

    def init(real_train):
        return Pool(summarize(real_train), jnp.ones((1,), jnp.bool_), jnp.zeros((1,), jnp.int32),
                    jnp.int32(1), jnp.bool_(False))

    def update(pool, block, generation, key, hparams):
        del key, hparams
        if regime == "replace":
            return pool._replace(data=block, origin=jnp.full((1,), generation, jnp.int32))
        return pool._replace(data=merge(pool.data, block))

    def metrics(view):
        size = view.data["count"][0]
        return {"pool_size": size, "real_fraction": view.data["real"][0] / jnp.maximum(size, 1.0)}

    return Regime(regime, 1, n, init, update, _full_view, metrics=metrics)


def regime_hparams(regimes) -> dict[str, float]:
    """Default hyperparameters of the given regime names, merged.

    >>> regime_hparams(("replace", "fixed_real_mix"))
    {'lam': 1.0}
    """
    out: dict[str, float] = {}
    for r in regimes:
        out.update(REGIME_HPARAMS.get(r, {}))
    return out


def _hp(hparams: Hparams, regime: str, name: str) -> Array:
    """A regime hyperparameter as float32 (its registered default when absent)."""
    return jnp.asarray(hparams.get(name, REGIME_HPARAMS[regime][name]), jnp.float32)


def _first(k: Int[Array, ""], size: int) -> Bool[Array, " size"]:
    return jnp.arange(size, dtype=jnp.int32) < k


def fixed_real_mix(n0: int, lam_max: float = 1.0) -> Regime:
    """D0 plus ``round(lam * n0)`` synthetic examples from the last model (Bertrand et al.).

    ``ceil(lam_max * n0)`` examples are sampled each generation (static); the first
    ``round(lam * n0)`` of them are valid, so ``lam`` in ``[0, lam_max]`` is vmappable.

    >>> import jax, jax.numpy as jnp
    >>> r = fixed_real_mix(n0=4, lam_max=2.0)
    >>> r.capacity, r.n_synthetic
    (12, 8)
    >>> p = r.update(r.init(jnp.zeros((4, 1))), jnp.ones((8, 1)), jnp.int32(1), None,
    ...              {"lam": jnp.float32(0.5)})
    >>> p.valid.astype(int).tolist(), p.origin.tolist()[:7], int(p.count)
    ([1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, -1], 6)
    """
    if not lam_max > 0:
        raise ValueError(f"lam_max={lam_max} must be > 0")
    m = max(1, math.ceil(lam_max * n0))
    capacity = n0 + m

    def update(pool, synthetic, generation, key, hparams):
        del key
        k = jnp.clip(jnp.round(_hp(hparams, "fixed_real_mix", "lam") * n0), 0, m)
        pool = write(pool, synthetic, jnp.int32(n0), generation)
        idx = jnp.arange(capacity, dtype=jnp.int32)
        real = idx < n0
        valid = real | _first(k.astype(jnp.int32) + n0, capacity)
        origin = jnp.where(real, 0, jnp.where(valid, pool.origin, -1)).astype(jnp.int32)
        return Pool(pool.data, valid, origin, jnp.sum(valid, dtype=jnp.int32), pool.overflow)

    return Regime(
        "fixed_real_mix", capacity, m, lambda real: init_pool(real, capacity), update, _full_view
    )


def _select_rows(mask: Bool[Array, " k"], a: Data, b: Data) -> Data:
    """Rows of ``a`` where ``mask`` else rows of ``b`` (every leaf)."""

    def pick(x, y):
        return jnp.where(mask.reshape((-1,) + (1,) * (x.ndim - 1)), x, y.astype(x.dtype))

    return jax.tree.map(pick, a, b)


def fresh_real_mix(n0: int, n: int) -> Regime:
    """Each generation trains on ``n`` examples: ``round(rho n)`` fresh real, the rest synthetic.

    The fresh real block comes from the source (``Source.fresh``) through the chain; it is tagged
    origin 0 (real). ``rho`` in ``[0, 1]`` is vmappable (Alemohammad et al.'s fresh data loop).

    >>> import jax.numpy as jnp
    >>> r = fresh_real_mix(n0=3, n=4)
    >>> p = r.update(r.init(jnp.zeros((3, 1))), jnp.ones((4, 1)), jnp.int32(2), None,
    ...              {"rho": jnp.float32(0.5)}, fresh=jnp.full((4, 1), 7.0))
    >>> p.data[:, 0].tolist(), p.origin.tolist(), int(p.count)
    ([7.0, 7.0, 1.0, 1.0], [0, 0, 2, 2], 4)
    """
    capacity = max(n0, n)

    def update(pool, synthetic, generation, key, hparams, *, fresh):
        del key
        k = jnp.clip(jnp.round(_hp(hparams, "fresh_real_mix", "rho") * n), 0, n)
        is_real = _first(k.astype(jnp.int32), n)
        block = _select_rows(is_real, fresh, synthetic)
        empty = Pool(pool.data, jnp.zeros_like(pool.valid), jnp.full_like(pool.origin, -1),
                     jnp.int32(0), pool.overflow)
        pool = write(empty, block, jnp.int32(0), generation)
        real_slot = jnp.zeros((capacity,), jnp.bool_).at[:n].set(is_real)
        return pool._replace(origin=jnp.where(real_slot, 0, pool.origin).astype(jnp.int32))

    return Regime(
        "fresh_real_mix", capacity, n, lambda real: init_pool(real, capacity), update,
        _full_view, n_fresh=n,
    )


def window(n0: int, n: int, generations: int, k: int, keep_real: bool = True) -> Regime:
    """Accumulate, keeping only the synthetic data of the last ``k`` generations (+ D0 or not).

    Stored as a ring buffer of ``k`` blocks of ``n`` slots after D0 (or from slot 0 when D0 is not
    kept); validity is recomputed from the origin tags, so exactly the generations
    ``g - k + 1 .. g`` (and D0 if kept) are valid after the update of generation ``g``.

    >>> import jax.numpy as jnp
    >>> r = window(n0=2, n=1, generations=10, k=2)
    >>> p = r.init(jnp.zeros((2, 1)))
    >>> for g in (1, 2, 3):
    ...     p = r.update(p, jnp.full((1, 1), float(g)), jnp.int32(g), None, {})
    >>> p.origin.tolist(), p.valid.astype(int).tolist()
    ([0, 0, 3, 2], [1, 1, 1, 1])
    """
    if k < 1:
        raise ValueError(f"window={k} must be >= 1")
    k = min(k, max(generations - 1, 1))
    base = n0 if keep_real else 0
    capacity = max(n0, base + k * n)

    def update(pool, synthetic, generation, key, hparams):
        del key, hparams
        generation = jnp.asarray(generation, jnp.int32)
        start = base + ((generation - 1) % k) * n
        pool = write(pool, synthetic, start, generation)
        oldest = jnp.maximum(generation - (k - 1), 1)
        valid = (pool.origin >= oldest) | ((pool.origin == 0) & keep_real)
        origin = jnp.where(valid, pool.origin, -1).astype(jnp.int32)
        return Pool(pool.data, valid, origin, jnp.sum(valid, dtype=jnp.int32), pool.overflow)

    return Regime("window", capacity, n, lambda real: init_pool(real, capacity), update, _full_view)


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


#: name -> factory of a Regime from a StaticConfig (``collapse-jax list`` shows them).
REGIMES: dict[str, Callable[[StaticConfig], Regime]] = {
    "replace": lambda s: replace(s.n0, s.n, s.generations),
    "accumulate": lambda s: accumulate(s.n0, s.n, s.generations),
    "accumulate_subsample": lambda s: accumulate_subsample(s.n0, s.n, s.generations, s.subsample),
    "fixed_real_mix": lambda s: fixed_real_mix(s.n0, s.lam_max),
    "fresh_real_mix": lambda s: fresh_real_mix(s.n0, s.n),
    "window": lambda s: window(s.n0, s.n, s.generations, s.window, s.window_keep_real),
}


def make_regime(static: StaticConfig) -> Regime:
    """The regime a StaticConfig names."""
    return REGIMES[static.regime](static)
