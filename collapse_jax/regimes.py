"""Data regimes: how the pool changes between generations, each a pure function with identical
input and output shapes, so one chain is a single loop and many chains are one ``vmap``.

Generation g is fit on the pool after g rounds of sampling (n synthetic per round); capacities:

- ``replace``: the n newest synthetic examples only. ``max(n0, n)``.
- ``accumulate``: D0 plus every synthetic example so far. ``n0 + (G - 1) n``.
- ``accumulate_subsample``: accumulate, but each fit sees a uniform subsample of fixed size ``m``
  (Kazdan et al. 2024) gathered into a pool of capacity ``m``: a fit costs O(m).
- ``fixed_real_mix``: D0 plus ``round(lam * n0)`` fresh synthetic examples (Bertrand et al. 2023);
  ``lam`` in ``[0, lam_max]`` is vmapped. ``n0 + ceil(lam_max n0)``.
- ``fresh_real_mix``: ``n`` examples per generation, ``round(rho * n)`` of them fresh real data
  (``Source.fresh``, origin 0), the rest synthetic (Alemohammad et al. 2023). ``max(n0, n)``.
- ``window``: accumulate, keeping the synthetic data of the last ``k`` generations (``window``),
  with D0 or not (``window_keep_real``). ``n0 + k n`` or ``max(n0, k n)``.

Regime hyperparameters (``REGIME_HPARAMS``, ranges ``REGIME_RANGES``) share the model's vmapped
``hparams``. ``statistics_regime``: a fast path's pool of summed sufficient statistics.

>>> sorted(REGIMES)[:3]  # name -> factory ``StaticConfig -> Regime``
['accumulate', 'accumulate_subsample', 'fixed_real_mix']

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
from jaxtyping import Array, Bool, Int

from collapse_jax.config import NONNEGATIVE, UNIT, HparamRange, StaticConfig
from collapse_jax.pool import Pool, gather, init_pool, pool_metrics, prefix_subsample, write
from collapse_jax.types import Data, Hparams, PRNGKey

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

    Shapes: ``init`` takes leaves ``[n0, ...]``, ``update`` ``[n_synthetic, ...]``; pools hold
    ``[capacity, ...]``.

    >>> r = accumulate(n0=3, n=2, generations=4)
    >>> r.name, r.capacity, r.n_synthetic, r.fit_capacity  # 3 + (4 - 1) * 2 slots
    ('accumulate', 9, 2, 9)
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
    """Each generation is fit on the newest ``n`` synthetic examples only (D0 leaves at g = 1).

    >>> import jax.numpy as jnp
    >>> r = replace(n0=3, n=2, generations=4)
    >>> p = r.update(r.init(jnp.zeros((3, 1))), jnp.ones((2, 1)), jnp.int32(1), None, {})
    >>> p.data.shape, p.valid.tolist(), p.origin.tolist()
    ((3, 1), [True, True, False], [1, 1, -1])
    """
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
    """Each generation is fit on D0 plus all synthetic data so far (block g at ``n0 + (g-1) n``).

    >>> import jax.numpy as jnp
    >>> r = accumulate(n0=2, n=1, generations=3)
    >>> p = r.update(r.init(jnp.zeros((2, 1))), jnp.ones((1, 1)), jnp.int32(1), None, {})
    >>> p.origin.tolist(), {k: float(v) for k, v in r.metrics(p).items()}
    ([0, 0, 1, -1], {'pool_size': 3.0, 'real_fraction': 0.6666666865348816})
    """
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

#: Allowed values of the regimes' hyperparameters (``lam`` is further bounded by the static
#: ``lam_max``, see ``validate``).
REGIME_RANGES: dict[str, HparamRange] = {"lam": NONNEGATIVE, "rho": UNIT}

#: What the regimes' hyperparameters mean (``collapse-jax families``).
REGIME_DESCRIBE: dict[str, str] = {
    "lam": "fixed_real_mix: synthetic examples per generation as a multiple of n0 (<= lam_max)",
    "rho": "fresh_real_mix: fraction of each training set that is fresh real data",
}


def statistics_regime(
    regime: str, n: int, summarize: Callable[[Data], Data], merge: Callable[[Data, Data], Data]
) -> Regime:
    """``replace`` or ``accumulate`` over a one-slot pool holding sufficient statistics.

    For a fit that depends on its pool only through additive statistics (a model's exact fast
    path, ``GenerativeModel.regime``): ``summarize(rows)`` gives a one-slot block (leading axis
    1, with ``count`` and ``real``: rows and real rows), ``sample`` returns such a block for its
    ``n`` rows, ``merge(a, b)`` the union's; the pool stays O(statistics) at every generation.

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
    """The regime a StaticConfig names (``REGIMES``; the generic one, never a model's fast path).

    >>> from collapse_jax import StaticConfig
    >>> make_regime(StaticConfig("gaussian", "window", n0=4, n=2, d=1, generations=5)).capacity
    8
    """
    return REGIMES[static.regime](static)
