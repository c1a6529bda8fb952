"""A DDPM over atom coordinates in the zero centre-of-mass subspace: schedule, noising, loss,
sampler.

Coordinates ``x [A, 3]`` (Angstrom) live in the subspace where the mean over the real atoms is
0 (translations carry no information). Noise is drawn there: ``eps = z - mean_real(z)`` with
``z ~ N(0, I)`` on real atoms and 0 on padding, so ``eps`` has covariance ``(I - 11^T / n)``
per coordinate axis, and the forward process, the loss and the sampler never leave the subspace
(Hoogeboom et al. 2022; Xu et al. 2022 centre likewise).

Forward process with ``T`` steps and the cosine schedule of Nichol & Dhariwal (``s = 0.008``,
``beta_t <= 0.999``): ``q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t P)`` and in closed
form ``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) P)`` with ``abar_t = prod_{s<=t}
(1 - beta_s)`` and ``P`` the projection above. Training minimises the noise-prediction loss
(Ho et al. 2020; the network is v-parameterised, ``predict_eps``) per conformer,
``|eps_hat(x_t, t) - eps|^2`` summed over atoms and axes and divided by the number of real
atoms, with ``t`` uniform on ``1..T``. Sampling is ancestral:
``x_T ~ N(0, P)``, then ``x_{t-1} = mu_t + sigma_t z`` with the posterior mean
``mu_t = (sqrt(abar_{t-1}) beta_t x0_hat + sqrt(alpha_t) (1 - abar_{t-1}) x_t) / (1 - abar_t)``
of the predicted clean conformer ``x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)``
(unbounded, the same as ``(x_t - beta_t / sqrt(1 - abar_t) eps_hat) / sqrt(alpha_t)``; the
sampler can bound ``x0_hat`` to a radius) and ``sigma_t^2 = beta_t (1 - abar_{t-1}) /
(1 - abar_t)`` (0 at ``t = 1``), as one ``lax.scan`` over ``t = T .. 1``.

References:
    Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models", NeurIPS,
        arXiv:2006.11239.
    Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models", ICML,
        arXiv:2102.09672 (cosine schedule).
    Hoogeboom, Satorras, Vignac & Welling 2022, "Equivariant Diffusion for Molecule Generation
        in 3D", ICML, arXiv:2203.17003 (zero centre-of-mass noise).
    Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion Models", ICLR,
        arXiv:2202.00512 (v-parameterisation).
    Xu et al. 2022, "GeoDiff: a Geometric Diffusion Model for Molecular Conformation
        Generation", ICLR, arXiv:2203.02923.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from collapse_jax import rng

#: ``v_hat = denoise(x_t [A, 3], atoms [A], edges [A, A], t / T) -> [A, 3]`` for one conformer
#: (the network; ``predict_eps`` turns its output into the predicted noise).
DenoiseFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


class Schedule(NamedTuple):
    """Noise schedule, indexed by ``t = 0 .. T`` (entry 0: no noise).

    Attributes:
        beta: ``[T + 1]`` float32, ``beta[0] = 0``.
        alpha_bar: ``[T + 1]`` float32, ``alpha_bar[0] = 1``.
    """

    beta: jax.Array
    alpha_bar: jax.Array

    @property
    def steps(self) -> int:
        return self.beta.shape[0] - 1


def cosine_schedule(steps: int, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """The cosine schedule (computed in float64 on the host, stored as float32).

    >>> sch = cosine_schedule(10)
    >>> float(sch.alpha_bar[0]), sch.steps, bool(sch.alpha_bar[-1] < 1e-3)
    (1.0, 10, True)
    """
    t = np.arange(steps + 1, dtype=np.float64) / steps
    f = np.cos((t + s) / (1 + s) * np.pi / 2) ** 2
    beta = np.clip(1.0 - f[1:] / f[:-1], 0.0, max_beta)
    beta = np.concatenate([[0.0], beta])
    alpha_bar = np.cumprod(1.0 - beta)
    return Schedule(jnp.asarray(beta, jnp.float32), jnp.asarray(alpha_bar, jnp.float32))


def com_free_noise(key: jax.Array, mask: jax.Array) -> jax.Array:
    """Gaussian noise ``[..., A, 3]`` projected to zero mean over the real atoms of ``mask
    [..., A]`` (0 on padding)."""
    z = rng.normal(key, (math.prod(mask.shape) * 3,), jnp.float32).reshape(*mask.shape, 3)
    flat_z, flat_m = z.reshape(-1, *z.shape[-2:]), mask.reshape(-1, mask.shape[-1])
    return jax.vmap(remove_mean)(flat_z, flat_m).reshape(z.shape)


def q_sample(sch: Schedule, x0: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    """``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (the closed-form marginal), batched.

    Args:
        sch: the schedule.
        x0: ``[N, A, 3]`` clean centred coordinates.
        t: ``[N]`` int32 steps in ``1 .. T``.
        eps: ``[N, A, 3]`` zero-mean noise.
    """
    ab = sch.alpha_bar[t][:, None, None]
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * eps


def forward_step(sch: Schedule, x_prev: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    """One step of the forward chain: ``x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps``
    (``t`` a scalar step; for testing the closed form against the chain)."""
    b = sch.beta[t]
    return jnp.sqrt(1.0 - b) * x_prev + jnp.sqrt(b) * eps


def predict_eps(denoise: DenoiseFn, sch: Schedule, x_t: jax.Array, atoms: jax.Array,
                edges: jax.Array, t: jax.Array) -> jax.Array:
    """Predicted noise ``[N, A, 3]`` of ``x_t [N, A, 3]`` at steps ``t [N]`` (v-parameterised).

    The network output ``v_hat`` is read as ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0``
    (Salimans & Ho 2022), so ``eps_hat = sqrt(abar_t) v_hat + sqrt(1 - abar_t) x_t`` (``x_t``
    centred first: exact translation invariance). Near ``t = T``, where ``x_t`` is almost pure
    noise, ``eps_hat`` tends to ``x_t`` whatever the network says, so the first sampling steps
    cannot amplify its errors by ``1 / sqrt(alpha_T)`` (about 30 for the cosine schedule), and the
    network's target has the scale of a conformer at every ``t``. The loss is still the noise
    prediction loss.
    """
    mask = atoms > 0
    x_c = jax.vmap(remove_mean)(x_t, mask)
    v_hat = jax.vmap(denoise)(x_c, atoms, edges, t.astype(jnp.float32) / jnp.float32(sch.steps))
    ab = sch.alpha_bar[t][:, None, None]
    return jnp.sqrt(ab) * v_hat + jnp.sqrt(1.0 - ab) * x_c


def per_conformer_loss(eps_hat: jax.Array, eps: jax.Array, mask: jax.Array) -> jax.Array:
    """``sum_atoms |eps_hat - eps|^2 / n_atoms``: ``[N, A, 3]`` twice and ``[N, A]`` -> ``[N]``."""
    w = mask.astype(jnp.float32)
    sq = jnp.sum((eps_hat - eps) ** 2, axis=-1) * w
    return jnp.sum(sq, axis=-1) / jnp.maximum(jnp.sum(w, axis=-1), 1.0)


def denoising_loss(denoise: DenoiseFn, sch: Schedule, batch: dict, t: jax.Array,
                   eps: jax.Array) -> jax.Array:
    """Per-conformer loss ``[N]`` of conformers ``batch`` at steps ``t [N]`` with noise ``eps``.

    ``batch`` holds ``coords [N, A, 3]``, ``atoms [N, A]``, ``edges [N, A, A]``.
    """
    atoms = batch["atoms"]
    x_t = q_sample(sch, batch["coords"], t, eps)
    eps_hat = predict_eps(denoise, sch, x_t, atoms, batch["edges"], t)
    return per_conformer_loss(eps_hat, eps, atoms > 0)


def training_loss(denoise: DenoiseFn, sch: Schedule, batch: dict, key: jax.Array) -> jax.Array:
    """Mean noise-prediction loss of a minibatch, ``t`` uniform on ``1..T`` (one key)."""
    k_t, k_eps = rng.split(key)
    n = batch["atoms"].shape[0]
    u = rng.uniform(k_t, (n,), jnp.float32)
    t = jnp.minimum(jnp.floor(u * sch.steps).astype(jnp.int32), sch.steps - 1) + 1
    eps = com_free_noise(k_eps, batch["atoms"] > 0)
    return jnp.mean(denoising_loss(denoise, sch, batch, t, eps))


def sample(denoise: DenoiseFn, sch: Schedule, key: jax.Array, atoms: jax.Array,
           edges: jax.Array, radius: jax.Array | None = None) -> jax.Array:
    """Ancestral sampling of ``N`` conformers (one ``lax.scan`` over ``t = T .. 1``).

    Args:
        denoise: the noise predictor.
        sch: the schedule.
        key: randomness; step ``t`` uses ``fold_in(key, t)``, ``x_T`` uses ``fold_in(key, 0)``.
        atoms: ``[N, A]`` atom type codes of the molecules to sample.
        edges: ``[N, A, A]`` their edge codes.
        radius: optional ``[N]`` bound on each atom's distance from the centre in the
            predicted clean conformer ``x0_hat`` (rescaled onto the ball when farther: the
            rotation-equivariant form of clipping the prediction, as image DDPMs clip to the
            pixel range); None = no bound.

    Returns:
        ``[N, A, 3]`` conformers (centred, 0 on padding).
    """
    mask = atoms > 0
    x_t = com_free_noise(rng.fold_in(key, 0), mask)
    steps = jnp.arange(sch.steps, 0, -1, dtype=jnp.int32)

    def body(x, t):
        beta, ab, ab_prev = sch.beta[t], sch.alpha_bar[t], sch.alpha_bar[t - 1]
        eps_hat = predict_eps(denoise, sch, x, atoms, edges,
                              jnp.full((atoms.shape[0],), t, jnp.int32))
        # posterior mean from the predicted clean conformer (equal to the eps form unclipped)
        x0 = (x - jnp.sqrt(1.0 - ab) * eps_hat) / jnp.sqrt(ab)
        if radius is not None:
            norm = jnp.sqrt(jnp.sum(x0 * x0, axis=-1, keepdims=True) + 1e-12)
            x0 = x0 * jnp.minimum(1.0, radius[:, None, None] / norm)
        mean = (jnp.sqrt(ab_prev) * beta * x0 + jnp.sqrt(1.0 - beta) * (1.0 - ab_prev) * x) / (
            1.0 - ab)
        sigma = jnp.sqrt(beta * (1.0 - ab_prev) / (1.0 - ab))
        return mean + sigma * com_free_noise(rng.fold_in(key, t), mask), None

    x0, _ = jax.lax.scan(body, x_t, steps)
    return x0


def remove_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """``x [A, 3]`` minus its mean over the real atoms (``mask [A]``), 0 on padding.

    >>> import jax.numpy as jnp
    >>> remove_mean(jnp.array([[1.0, 0, 0], [3.0, 0, 0], [9.0, 9, 9]]),
    ...             jnp.array([1.0, 1.0, 0.0]))[:, 0].tolist()
    [-1.0, 1.0, 0.0]
    """
    w = mask.astype(x.dtype)[:, None]
    mean = jnp.sum(x * w, axis=0, keepdims=True) / jnp.maximum(jnp.sum(w), 1.0)
    return (x - mean) * w
