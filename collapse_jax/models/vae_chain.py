"""The VAE family's chain (``models/vae.py`` registers it): the flax ``nnx`` network and the
factory, imported when a VAE chain is built (``import collapse_jax`` loads neither flax nor
optax)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from collapse_jax.config import StaticConfig
from collapse_jax.fitting import FitConfig, make_net_init_fit
from collapse_jax.model import GenerativeModel
from collapse_jax.models.nn import lecun_normal_state
from collapse_jax.models.vae import EVAL_SEED, MMD_REFERENCE, _opt, class_metrics, mmd2


class VAE(nnx.Module):
    """MLP VAE: ``d -> hidden -> 2 x latent`` encoder, ``latent -> hidden -> d`` logit decoder."""

    def __init__(self, d: int, hidden: int, latent: int, *, rngs: nnx.Rngs):
        self.enc = nnx.Linear(d, hidden, rngs=rngs)
        self.enc_mu = nnx.Linear(hidden, latent, rngs=rngs)
        self.enc_logvar = nnx.Linear(hidden, latent, rngs=rngs)
        self.dec = nnx.Linear(latent, hidden, rngs=rngs)
        self.dec_out = nnx.Linear(hidden, d, rngs=rngs)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``x [m, d] -> (mu [m, latent], logvar [m, latent])``."""
        h = jax.nn.relu(self.enc(x))
        return self.enc_mu(h), self.enc_logvar(h)

    def decode(self, z: jax.Array) -> jax.Array:
        """``z [m, latent] -> logits [m, d]``."""
        return self.dec_out(jax.nn.relu(self.dec(z)))


def elbo_terms(
    net: VAE, x: jax.Array, eps: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Per-image Bernoulli reconstruction loss and KL (``[m]`` each) with noise ``eps``."""
    mu, logvar = net.encode(x)
    z = mu + jnp.exp(0.5 * logvar) * eps
    logits = net.decode(z)
    recon = jnp.sum(jax.nn.softplus(logits) - x * logits, axis=-1)
    kl = 0.5 * jnp.sum(mu**2 + jnp.exp(logvar) - 1.0 - logvar, axis=-1)
    return recon, kl


def make_vae(static: StaticConfig) -> GenerativeModel:
    """VAE family for a StaticConfig (options: ``models/vae.py``)."""
    d = static.d
    hidden = _opt(static, "hidden", 128)
    latent = _opt(static, "latent", 8)
    m_eval = _opt(static, "eval_samples", 256)
    bernoulli = _opt(static, "pixel_sample", "mean") == "bernoulli"
    cfg = FitConfig(
        batch=_opt(static, "batch", 64),
        init_mode=_opt(static, "init_mode", "reinit"),
        budget=_opt(static, "budget", "steps"),
        steps=_opt(static, "steps", 300),
        epochs=_opt(static, "epochs", 1),
    )
    graphdef, abstract = nnx.split(
        nnx.eval_shape(lambda: VAE(d, hidden, latent, rngs=nnx.Rngs(0))))
    init_net = lambda key: lecun_normal_state(key, abstract)

    def loss(net_state, x, key, hparams):
        del hparams
        net = nnx.merge(graphdef, net_state)
        eps = jax.random.normal(key, (x.shape[0], latent), jnp.float32)
        recon, kl = elbo_terms(net, x, eps)
        return jnp.mean(recon + kl)

    init, fit = make_net_init_fit(cfg, loss, init_net)

    def _generate(key, net_state, num):
        k_z, k_px = jax.random.split(key)
        net = nnx.merge(graphdef, net_state)
        z = jax.random.normal(k_z, (num, latent), jnp.float32)
        probs = jax.nn.sigmoid(net.decode(z))
        if bernoulli:
            return jax.random.bernoulli(k_px, probs).astype(jnp.float32)
        return probs

    def sample(key, params, real, hparams, num):
        del real, hparams
        return _generate(key, params["net"], num)

    def evaluate(params, real, hparams):
        del hparams
        k_eps, k_gen = jax.random.split(jax.random.key(EVAL_SEED))
        net = nnx.merge(graphdef, params["net"])
        x = real.test
        eps = jax.random.normal(k_eps, (x.shape[0], latent), jnp.float32)
        recon, kl = elbo_terms(net, x, eps)
        gen = _generate(k_gen, params["net"], m_eval)
        probs = jax.nn.softmax(gen @ real.truth["probe_w"] + real.truth["probe_b"][None, :])
        return {
            "neg_elbo": jnp.mean(recon + kl),
            "recon": jnp.mean(recon),
            "kl": jnp.mean(kl),
            **class_metrics(probs),
            "mmd": mmd2(gen, x[:MMD_REFERENCE]),
            "train_loss": params["fit"]["train_loss"],
            "wasted_step_fraction": params["fit"]["wasted_step_fraction"],
        }

    return GenerativeModel(init, fit, sample, evaluate)
