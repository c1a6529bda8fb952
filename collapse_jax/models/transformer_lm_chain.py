"""The transformer LM family's chain (``models/transformer_lm.py`` registers it): the factory
over the flax ``nnx`` network of ``models/lm/net.py``, imported when an LM chain is built
(``import collapse_jax`` loads neither flax nor optax)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from collapse_jax.config import StaticConfig
from collapse_jax.fitting import make_net_init_fit
from collapse_jax.model import GenerativeModel
from collapse_jax.models.lm.decode import decode_batched, start_prefix
from collapse_jax.models.lm.metrics import chunked_nll, mean_nll, sample_metrics
from collapse_jax.models.lm.net import empty_cache, init_state, split_module
from collapse_jax.models.transformer_lm import (
    EVAL_SEED,
    LN2,
    _check,
    _opt,
    fit_config,
    lm_config,
    specials,
)


def make_transformer_lm(static: StaticConfig) -> GenerativeModel:
    """Transformer LM family for a StaticConfig (options: ``models/transformer_lm.py``)."""
    _check(static)
    cfg = lm_config(static)
    sp = specials(static)
    graphdef, abstract = split_module(cfg)
    init_net = lambda key: init_state(key, abstract, cfg.depth)
    m_eval, eval_batch = _opt(static, "eval_samples"), _opt(static, "eval_batch")
    sample_batch, start = _opt(static, "sample_batch"), _opt(static, "start")

    def forward(state):
        return nnx.merge(graphdef, state)

    def loss(state, docs, key, hparams):
        del key, hparams
        return mean_nll(forward(state), docs)

    init, fit = make_net_init_fit(fit_config(static), loss, init_net)

    def generate(key, state, real, hparams, num):
        k_start, k_decode = jax.random.split(key)
        net = forward(state)
        prefix = start_prefix(k_start, start, real.train, num, sp)
        return decode_batched(net.decode_step, lambda b: empty_cache(cfg, b), k_decode, prefix,
                              hparams, sp, cfg.context, sample_batch)

    def sample(key, params, real, hparams, num):
        return generate(key, params["net"], real, hparams, num)

    def evaluate(params, real, hparams):
        total, count = chunked_nll(forward(params["net"]), real.test, eval_batch)
        ce = total / jnp.maximum(count, jnp.float32(1.0))
        bpb = total / jnp.float32(LN2) / jnp.maximum(real.truth["test_bytes"], 1.0)
        gen = generate(jax.random.key(EVAL_SEED), params["net"], real, hparams, m_eval)
        return {
            "cross_entropy": ce, "bits_per_byte": bpb, "perplexity": jnp.exp(ce),
            **sample_metrics(gen, real.train, sp.bos, sp.eos, sp.pad, cfg.vocab),
            "train_loss": params["fit"]["train_loss"],
            "wasted_step_fraction": params["fit"]["wasted_step_fraction"],
        }

    return GenerativeModel(init, fit, sample, evaluate)
