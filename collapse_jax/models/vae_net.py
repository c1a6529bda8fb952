"""The VAE family's network (flax ``nnx``), imported when a chain is built
(``models/vae.py``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


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
