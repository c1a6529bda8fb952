"""Categorical distribution over K outcomes refit on its own samples (multinomial resampling).

Data are int32 outcome indices ``[n]``; ``K`` is the static ``d``. Fit: the (weighted) empirical
frequencies of the pool. Sampling: multinomial draws (inverse CDF) from ``p^(1/T)`` renormalised
(temperature ``T``), with outcomes below ``min_p * max(p)`` removed (min-p truncation;
``min_p = 0`` keeps every outcome). Under ``replace`` every chain ends with all mass on one
outcome (an absorbing state of the Wright-Fisher chain); the generation of total collapse of each
chain is read from the ``collapsed`` column with ``first_collapse``; its mean is close to the
Wright-Fisher absorption time ``-2 n sum_k (1 - p_k) log(1 - p_k)`` (``theory.categorical_collapse_
time``; about 1.9 n generations for K = 10 uniform).

Real data: the true ``p`` is static (option ``prior``: ``uniform``; ``zipf`` with
``p_k ~ (k+1)^-alpha``) or drawn per chain (``dirichlet`` with concentration ``alpha``).

Metrics (generation g):
    entropy: Shannon entropy of the fitted p (nats).
    collision: collision probability ``sum p^2`` (closed form in ``theory.py``).
    survivors: number of outcomes with p > 0.
    collapsed: (the chain's flag, from ``GenerativeModel.collapsed``) a single outcome is left.
    tv: total-variation distance to the true p.
    missing_mass: true probability of the outcomes the fit has lost.

References:
    Seddik et al. 2024, "How bad is training on synthetic data? A statistical analysis of language
        model collapse", arXiv:2404.05090.
    Shumailov et al. 2024, "AI models collapse when trained on recursively generated data",
        Nature 631.
    Littler 1975, "Loss of variability at one locus in a finite population", Math. Biosci. 24.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from collapse_jax.config import NONNEGATIVE, POSITIVE, UNIT, ConfigError, StaticConfig
from collapse_jax.data.synthetic import PRIORS
from collapse_jax.model import GenerativeModel, register_model
from collapse_jax.pool import origin_weights, sample_weighted_indices


def _check(static: StaticConfig) -> None:
    if static.d < 2:
        raise ConfigError(f"d={static.d}: the categorical model needs d = K >= 2 outcomes")


@register_model(
    "categorical",
    source="categorical",
    hparams={"alpha": 1.0, "temperature": 1.0, "min_p": 0.0, "real_weight": 1.0},
    ranges={"alpha": POSITIVE, "temperature": POSITIVE, "min_p": UNIT, "real_weight": NONNEGATIVE},
    options={"prior": PRIORS},
    metrics=("entropy", "collision", "survivors", "tv", "missing_mass"),
    check=_check,
    doc="K-outcome categorical (K = d): empirical frequencies, multinomial resampling",
    example={"n0": 16, "n": 16, "d": 5, "n_test": 16},
    describe={
        "alpha": "Zipf exponent, or Dirichlet concentration of the true p (option prior)",
        "temperature": "sampling temperature: p^(1/T) renormalised (< 1 sharpens)",
        "min_p": "truncation: outcomes below min_p times the largest probability are dropped",
        "real_weight": "weight of a real draw in the fit relative to a synthetic one",
        "prior": "true p: uniform, Zipf(alpha), or one Dirichlet(alpha) draw per chain",
    },
)
def make_categorical(static: StaticConfig) -> GenerativeModel:
    """Categorical family for a StaticConfig (``K = d``; option ``prior``)."""
    k = static.d

    def init(key, real, hparams):
        del key, real, hparams
        return {"p": jnp.full((k,), 1.0 / k, jnp.float32)}

    def fit(key, pool, params, hparams):
        del key, params
        w = origin_weights(pool, hparams["real_weight"])
        # one-hot sum rather than a scatter-add: vectorises under vmap on CPU
        onehot = pool.data[:, None] == jnp.arange(k, dtype=jnp.int32)[None, :]
        counts = jnp.sum(jnp.where(onehot, w[:, None], 0.0), axis=0)
        return {"p": counts / jnp.maximum(jnp.sum(counts), jnp.finfo(jnp.float32).tiny)}

    def sample(key, params, real, hparams, num):
        del real
        p = params["p"]
        top = jnp.max(p)
        keep = (p > 0) & ((p >= hparams["min_p"] * top) | (p == top))
        logp = jnp.log(jnp.where(keep, p, 1.0)) / hparams["temperature"]
        q = jnp.where(keep, jnp.exp(logp - jnp.max(jnp.where(keep, logp, -jnp.inf))), 0.0)
        # inverse CDF on p^(1/T) (same law as jax.random.categorical, O(num log K) not O(num K))
        return sample_weighted_indices(key, q, num)

    def evaluate(params, real, hparams):
        del hparams
        p, p_true = params["p"], real.truth["p"]
        alive = p > 0
        survivors = jnp.sum(alive, dtype=jnp.int32).astype(jnp.float32)
        return {
            "entropy": -jnp.sum(jnp.where(alive, p * jnp.log(jnp.where(alive, p, 1.0)), 0.0)),
            "collision": jnp.sum(p**2),
            "survivors": survivors,
            "tv": 0.5 * jnp.sum(jnp.abs(p - p_true)),
            "missing_mass": jnp.sum(jnp.where(alive, 0.0, p_true)),
        }

    def collapsed(params, real, hparams):
        del real, hparams
        return jnp.sum(params["p"] > 0) <= 1

    return GenerativeModel(init, fit, sample, evaluate, collapsed)


def first_collapse(table, by: Sequence[str] = ("regime", "seed")):
    """Generation of total collapse (first g with one outcome left) of every chain, on the host.

    Args:
        table: the results table (pandas) with ``generation`` and ``collapsed`` columns.
        by: columns identifying a chain (add swept columns such as ``n``).

    Returns:
        A DataFrame with the ``by`` columns and ``collapse_generation`` (NaN when the chain did
        not collapse within its generations).

    >>> import pandas as pd
    >>> t = pd.DataFrame({"seed": [0, 0, 0, 1, 1, 1], "generation": [0, 1, 2] * 2,
    ...                   "collapsed": [0., 1., 1., 0., 0., 0.]})
    >>> first_collapse(t, by=["seed"])["collapse_generation"].tolist()
    [1.0, nan]
    """
    by = list(by)
    t = table.assign(_g=np.where(table["collapsed"].to_numpy() > 0.5,
                                 table["generation"].to_numpy(np.float64), np.inf))
    out = t.groupby(by, sort=False)["_g"].min().reset_index()
    out["collapse_generation"] = out.pop("_g").replace(np.inf, np.nan)
    return out
