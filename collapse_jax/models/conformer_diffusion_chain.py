"""The conformer diffusion family's chain (``models/conformer_diffusion.py`` registers it): the
factory over the flax ``nnx`` EGNN denoiser of ``models/conformer/egnn.py``, imported when a
conformer chain is built (``import collapse_jax`` loads neither flax nor optax)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from collapse_jax import rng
from collapse_jax.config import StaticConfig
from collapse_jax.fitting import FitConfig, make_net_init_fit
from collapse_jax.model import GenerativeModel
from collapse_jax.models.conformer import diffusion as dm
from collapse_jax.models.conformer.egnn import Denoiser
from collapse_jax.models.conformer.rmsd import bond_check, conformer_metrics
from collapse_jax.models.conformer_diffusion import EVAL_SEED, _opt, eval_timesteps
from collapse_jax.models.nn import lecun_normal_state


def make_conformer_diffusion(static: StaticConfig) -> GenerativeModel:
    """Conformer diffusion chain for a StaticConfig (options: ``models/conformer_diffusion.py``)."""
    sch = dm.cosine_schedule(_opt(static, "diffusion_steps"))
    chunk = _opt(static, "chunk")
    delta, tol = _opt(static, "cov_threshold"), _opt(static, "bond_tol")
    t_eval = eval_timesteps(sch.steps, _opt(static, "eval_timesteps"))
    cfg = FitConfig(
        batch=_opt(static, "batch"), init_mode=_opt(static, "init_mode"),
        budget=_opt(static, "budget"), steps=_opt(static, "steps"), epochs=_opt(static, "epochs"),
        schedule=_opt(static, "schedule"), warmup=_opt(static, "warmup"),
        clip_norm=_opt(static, "clip_norm"))
    graphdef, abstract = nnx.split(nnx.eval_shape(
        lambda: Denoiser(_opt(static, "hidden"), _opt(static, "layers"), rngs=nnx.Rngs(0))))
    init_net = lambda key: lecun_normal_state(key, abstract)

    def denoiser(net_state):
        return lambda x, atoms, edges, t: nnx.merge(graphdef, net_state)(x, atoms, edges, t)

    def loss(net_state, batch, key, hparams):
        del hparams
        return dm.training_loss(denoiser(net_state), sch, batch, key)

    init, fit = make_net_init_fit(cfg, loss, init_net, diagnostics=("train_loss",))

    def generate(key, net_state, atoms, edges):
        """Conformers of the graphs ``atoms [N, A]``, ``edges [N, A, A]``, ``chunk`` at a time."""
        n = atoms.shape[0]
        keys = rng.split(key, -(-n // chunk))
        size = min(chunk, n)
        if n <= chunk:
            return dm.sample(denoiser(net_state), sch, keys[0], atoms, edges)
        pad = keys.shape[0] * size - n  # whole chunks, the last padded by repeating graphs
        idx = jnp.arange(n + pad, dtype=jnp.int32) % n
        blocks = (keys, atoms[idx].reshape(-1, size, *atoms.shape[1:]),
                  edges[idx].reshape(-1, size, *edges.shape[1:]))
        out = jax.lax.map(lambda b: dm.sample(denoiser(net_state), sch, *b), blocks)
        return out.reshape(-1, *out.shape[2:])[:n]

    def sample(key, params, real, hparams, num):
        del hparams
        m = real.truth["atoms"].shape[0]
        mol = jnp.arange(num, dtype=jnp.int32) % m
        atoms, edges = real.truth["atoms"][mol], real.truth["edges"][mol]
        coords = generate(key, params["net"], atoms, edges)
        return {"coords": coords, "atoms": atoms, "edges": edges, "mol": mol}

    def test_loss(net_state, test, key):
        """Mean loss over held-out conformers x ``t_eval`` (fixed noise), ``chunk`` at a time."""
        n, k = test["atoms"].shape[0], t_eval.shape[0]
        eps = dm.com_free_noise(key, jnp.broadcast_to(test["atoms"] > 0, (k, *test["atoms"].shape)))
        item = jnp.arange(n * k, dtype=jnp.int32)
        conf, ts = item % n, jnp.asarray(t_eval)[item // n]
        denoise = denoiser(net_state)

        def one(args):
            i, t, e = args
            batch = {key_: test[key_][i][None] for key_ in ("coords", "atoms", "edges")}
            return dm.denoising_loss(denoise, sch, batch, t[None], e[None])[0]

        items = (conf, ts, eps.reshape(n * k, *eps.shape[2:]))
        if n * k <= chunk:
            return jnp.mean(jax.vmap(one)(items))
        return jnp.mean(jax.lax.map(one, items, batch_size=chunk))

    def evaluate(params, real, hparams):
        del hparams
        k_loss, k_gen = rng.split(jax.random.key(EVAL_SEED))
        atoms_m, edges_m = real.truth["atoms"], real.truth["edges"]
        m, a = atoms_m.shape
        ref = real.test["coords"].reshape(-1, m, a, 3).transpose(1, 0, 2, 3)  # [M, R, A, 3]
        s = _opt(static, "eval_samples") or 2 * ref.shape[1]
        mol = jnp.arange(m * s, dtype=jnp.int32) % m
        gen = generate(k_gen, params["net"], atoms_m[mol], edges_m[mol])
        cov = conformer_metrics(gen.reshape(s, m, a, 3).transpose(1, 0, 2, 3), ref, atoms_m > 0,
                                delta)
        valid, err = bond_check(gen, edges_m[mol], real.truth["bond_ref"][mol], tol)
        return {"test_loss": test_loss(params["net"], real.test, k_loss), **cov,
                "validity": valid, "bond_error": err,
                "train_loss": params["fit"]["train_loss"]}

    return GenerativeModel(init, fit, sample, evaluate)
