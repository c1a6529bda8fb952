"""The KDE's exact incremental fast path: ``accumulate`` with a fixed bandwidth.

The pool only gains points and, with a fixed ``h``, a kernel value once computed never changes.
So the fit carries, per held-out point, the running log-sum of the kernels of the real slots and,
apart, of the synthetic slots (both unweighted: ``real_weight`` enters at evaluation,
``log(rw e^{L_real} + e^{L_synth}) - log(rw n0 + n_synth)``), and folds in only the block of ``n``
slots the last generation appended: O(n_test n) kernel evaluations per generation instead of
O(n_test capacity). ``var_ratio`` comes from running moments (Chan et al.'s merge), sampling from a
closed-form inverse CDF over the valid prefix (O(n), no pass over the capacity). The metrics equal
the full-pool path's to float32 rounding on the same chain (tests/models/test_kde_fast.py).

References:
    Chan, Golub, LeVeque 1979, "Updating formulae and a pairwise algorithm for computing sample
        variances".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from collapse_jax.config import StaticConfig
from collapse_jax.model import GenerativeModel
from collapse_jax.models.kde_kernels import (
    COLLAPSE_FLOOR,
    LOG_ZERO,
    held_out,
    kernel_sample,
    log_kernel_sum,
    log_norm,
    merge_moments,
    moments,
    prefix_weighted_indices,
)
from collapse_jax.pool import safe_reciprocal
from collapse_jax.regimes import make_regime

#: Regimes whose pool only ever gains points (so, with a fixed bandwidth, old kernel values stay).
FAST_REGIMES = ("accumulate",)


def make_fast(static: StaticConfig) -> GenerativeModel:
    """The KDE under ``accumulate`` with a fixed bandwidth, evaluated incrementally.

    Parameters (besides the pool ``points`` and ``h``, as the full path): the held-out points
    ``test`` (``init`` receives them; ``fit`` does not), ``seen`` (slots folded in so far), the
    running log kernel sums at every test point of the real slots ``lse_real`` and of the
    synthetic slots ``lse_synth`` (``[n_test]``, unnormalised, unweighted), and the running
    moments of both. Each fit folds in the slots written since the last one (a block of ``n``,
    found from ``seen``): O(n_test n) kernel evaluations instead of O(n_test capacity).
    """
    d, n0 = static.d, static.n0
    capacity = make_regime(static).capacity
    n = min(static.n, capacity)  # slots a generation appends (capacity < n only if G = 1)

    def init(key, real, hparams):
        del key
        h = jnp.asarray(hparams["h"], jnp.float32)
        return {
            "points": jnp.zeros((capacity, d), jnp.float32),
            "h": h,
            **held_out(real),
            "seen": jnp.int32(n0),
            "lse_real": log_kernel_sum(real.test, real.train, jnp.zeros((n0,), jnp.float32), h),
            "lse_synth": jnp.full(real.test.shape[:1], LOG_ZERO, jnp.float32),
            "real": moments(real.train, jnp.ones((n0,), jnp.float32)),
            "synth": moments(jnp.zeros((1, d), jnp.float32), jnp.zeros((1,), jnp.float32)),
        }

    def fit(key, pool, params, hparams):
        # Fold in the slots written since the last fit: an accumulate pool only appends, at
        # n0 + (g - 1) n, so they are the block of n starting at `seen`.
        del key
        h = jnp.asarray(hparams["h"], jnp.float32)
        seen = params["seen"]
        start = jnp.clip(seen, 0, capacity - n)
        idx = start + jnp.arange(n, dtype=jnp.int32)
        new = pool.valid[idx] & (idx >= seen)
        block = jax.lax.dynamic_slice_in_dim(pool.data, start, n, axis=0)
        logw = jnp.where(new, jnp.float32(0.0), -jnp.inf)
        lse_block = log_kernel_sum(params["test"], block, logw, h)
        w = new.astype(jnp.float32)
        return {
            **params,
            "points": pool.data,
            "h": h,
            "seen": seen + jnp.sum(new, dtype=jnp.int32),
            "lse_synth": jnp.logaddexp(params["lse_synth"], lse_block),
            "synth": merge_moments(params["synth"], moments(block, w)),
        }

    def sample(key, params, real, hparams, num):
        del real
        return kernel_sample(
            key, params["points"],
            lambda u: prefix_weighted_indices(u, n0, params["synth"]["weight"],
                                              hparams["real_weight"]),
            hparams["scale"], params["h"], num)

    def var_ratio(params, hparams):
        rw = jnp.asarray(hparams["real_weight"], jnp.float32)
        r = params["real"]
        weighted = {"weight": rw * r["weight"], "mean": r["mean"], "scatter": rw * r["scatter"]}
        pooled = merge_moments(weighted, params["synth"])
        trace = jnp.trace(pooled["scatter"]) * safe_reciprocal(pooled["weight"])
        t_trace = params["test_trace"]
        return (trace + d * params["h"] ** 2) / t_trace, t_trace

    def evaluate(params, real, hparams):
        del real  # the held-out points are in params (see kde_kernels.held_out)
        rw = jnp.asarray(hparams["real_weight"], jnp.float32)
        h = params["h"]
        log_rw = jnp.where(rw > 0, jnp.log(jnp.where(rw > 0, rw, 1.0)), -jnp.inf)
        mix = jnp.logaddexp(log_rw + params["lse_real"], params["lse_synth"])
        total = rw * n0 + params["synth"]["weight"]
        log_density = mix - jnp.log(total) + log_norm(d, h)
        return {
            "nll": -jnp.mean(log_density),
            "bandwidth": h,
            "var_ratio": var_ratio(params, hparams)[0],
        }

    def collapsed(params, real, hparams):
        del real
        ratio, t_trace = var_ratio(params, hparams)
        return (ratio <= COLLAPSE_FLOOR) & jnp.isfinite(t_trace)

    return GenerativeModel(init, fit, sample, evaluate, collapsed)
