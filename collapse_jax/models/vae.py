"""A small MLP variational autoencoder on [0, 1] pixel images, refit on its own samples.

Model (Kingma & Welling): encoder ``d -> hidden -> (mu, log var)`` of a diagonal Gaussian over
``latent`` dimensions; decoder ``latent -> hidden -> d`` logits of a **Bernoulli** likelihood per
pixel (binary cross-entropy against grey levels in [0, 1], as in the PyTorch VAE example the
paper builds on). Prior N(0, I). Written with flax ``nnx``: the module is split once into a
graphdef and a State of float32 arrays; ``fit``, ``sample`` and ``evaluate`` merge them inside pure
functions, so the parameters are a plain pytree a sweep vmaps (K chains = one program).

Sampling: ``z ~ N(0, I)``, then the decoder's pixel means (option ``pixel_sample="mean"``, what
the paper's VAE generates) or Bernoulli draws of them (``"bernoulli"``).

Fitting (``collapse_jax.fitting``): Adam on minibatches of the valid pool, learning rate
``hparams["lr"]`` (vmappable); options ``init_mode`` (``reinit``: fresh weights each generation,
``warm``: continue), ``budget`` (``steps`` per generation, or ``epochs`` over the pool).

Params pytree: ``{"net": nnx.State, "fit": {...}}``; ``fit`` holds the last fit's diagnostics so
``evaluate`` can report them.

Metrics (generation g, on held-out REAL test images ``real.test``; stochastic terms use fixed
noise, i.e. common random numbers across generations and chains):
    neg_elbo: mean negative ELBO per image (nats) = recon + kl, one reparameterised draw.
    recon: mean Bernoulli reconstruction loss (binary cross-entropy summed over pixels).
    kl: mean KL(q(z|x) || N(0, I)).
    label_entropy: entropy of the probe classifier's mean predicted class distribution over
        ``eval_samples`` generated images, divided by log(classes): 1 = classes balanced,
        0 = every sample looks like one class. The probe is a logistic regression fit once on
        the real training images (see ``collapse_jax.data.images``); no download needed.
    class_coverage: fraction of classes that are the probe's top prediction for at least half
        their uniform share (1 / (2 C)) of the generated images.
    confidence: mean top probability of the probe on generated images (sharpness).
    mmd: squared kernel MMD (biased, Gaussian kernel, bandwidth = mean squared distance between
        real test images) between generated images and up to 512 real test images, pixel space.
    train_loss: mean minibatch negative ELBO at the end of the fit (training pool).
    wasted_step_fraction: share of the fit's scan steps that were masked no-ops
        (``budget="epochs"``; 0 for ``budget="steps"``).

References:
    Kingma & Welling 2014, "Auto-Encoding Variational Bayes", arXiv:1312.6114.
    Gerstgrasser et al. 2024, "Is Model Collapse Inevitable?", arXiv:2404.01413 (VAE on MNIST:
        test loss +56% under replace over 9 iterations, +3% under accumulate).
    Gretton et al. 2012, "A Kernel Two-Sample Test", JMLR 13.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from collapse_jax.config import POSITIVE, ConfigError, StaticConfig
from collapse_jax.data.images import IMAGE_SOURCES
from collapse_jax.model import lazy_factory, register_model

#: Seed of the fixed evaluation noise (common random numbers across generations and chains).
EVAL_SEED = 1234
#: At most this many real test images enter the MMD (its cost is quadratic).
MMD_REFERENCE = 512


def _opt(static: StaticConfig, name: str, default):
    return static.option(name, default)


def _source_name(static: StaticConfig) -> str:
    return static.source or "digits"


def _check(static: StaticConfig) -> None:
    name = _source_name(static)
    info = IMAGE_SOURCES.get(name)
    if info is None:
        raise ConfigError(
            f"source={name!r}: the vae needs an image source; allowed: "
            f"{', '.join(sorted(IMAGE_SOURCES))}"
        )
    d = info.shape[0] * info.shape[1]
    if static.d != d:
        raise ConfigError(
            f"d={static.d}: source {name!r} has {info.shape} images, so d must be {d}"
        )


_OPTIONS = {
    "latent": (8, 2, 4, 16, 20, 32),
    "hidden": (128, 16, 32, 64, 256, 400, 512),
    "init_mode": ("reinit", "warm"),
    "budget": ("steps", "epochs"),
    "steps": (300, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
    "epochs": (1, 2, 3, 5, 10, 20, 30, 50, 100),
    "batch": (64, 8, 16, 32, 128, 256),
    "pixel_sample": ("mean", "bernoulli"),
    "eval_samples": (256, 16, 64, 1024),
}


def render_samples(samples: dict, static: StaticConfig, out_dir: str | Path) -> list[Path]:
    """``samples.png``: a row per regime, a column per kept generation, a mosaic of images each
    (``ModelSpec.render``)."""
    from collapse_jax.plots_images import plot_sample_grid  # matplotlib loads only to draw

    gens = sorted(next(iter(samples.values())))
    grid = {regime: np.stack([np.asarray(s[g]) for g in gens]) for regime, s in samples.items()}
    return [plot_sample_grid(grid, gens, IMAGE_SOURCES[_source_name(static)].shape,
                             Path(out_dir) / "samples.png",
                             title="samples by generation (first chain of each regime)")]


register_model(
    "vae",
    source="digits",
    hparams={"lr": 1e-3},
    ranges={"lr": POSITIVE},
    options=_OPTIONS,
    metrics=("neg_elbo", "recon", "kl", "label_entropy", "class_coverage", "confidence", "mmd",
             "train_loss", "wasted_step_fraction"),
    check=_check,
    doc="MLP VAE (flax nnx, Bernoulli decoder) on real images; Adam in the scan; prior samples",
    snapshot=16,
    render=render_samples,
    example={"n0": 24, "n": 24, "d": 64, "n_test": 16,
             "options": {"hidden": 16, "latent": 2, "steps": 10, "batch": 8,
                         "eval_samples": 16}},
    # the pool regimes are exercised with every cheap family; the VAE's contract runs the three
    # kinds of pool it sees (one block, a growing prefix, real + weighted synthetic slots)
    example_regimes=("replace", "accumulate", "fixed_real_mix"),
    describe={
        "lr": "Adam learning rate",
        "latent": "latent dimension", "hidden": "hidden units of encoder and decoder",
        "init_mode": "reinit: fresh weights each generation; warm: continue",
        "budget": "steps per generation, or epochs over the pool",
        "steps": "updates per generation (budget='steps')",
        "epochs": "passes over the pool per generation (budget='epochs')",
        "batch": "minibatch size",
        "pixel_sample": "samples are the decoder's pixel means, or Bernoulli draws of them",
        "eval_samples": "generated images the sample-quality metrics use",
    },
)(lazy_factory("collapse_jax.models.vae_chain", "make_vae"))


def class_metrics(probs: jax.Array) -> dict[str, jax.Array]:
    """Label entropy, class coverage and confidence of probe probabilities ``[m, C]``.

    >>> import jax.numpy as jnp
    >>> m = class_metrics(jnp.eye(4, dtype=jnp.float32))
    >>> [round(float(m[k]), 4) for k in ("label_entropy", "class_coverage", "confidence")]
    [1.0, 1.0, 1.0]
    """
    m, c = probs.shape
    mean = jnp.mean(probs, axis=0)
    ent = -jnp.sum(mean * jnp.log(jnp.maximum(mean, jnp.finfo(jnp.float32).tiny)))
    top = jax.nn.one_hot(jnp.argmax(probs, axis=-1), c, dtype=jnp.float32)
    share = jnp.mean(top, axis=0)
    return {
        "label_entropy": ent / jnp.log(jnp.float32(c)),
        "class_coverage": jnp.mean((share >= 0.5 / c).astype(jnp.float32)),
        "confidence": jnp.mean(jnp.max(probs, axis=-1)),
    }


def mmd2(x: jax.Array, y: jax.Array) -> jax.Array:
    """Biased squared MMD between rows of ``x [m, d]`` and ``y [n, d]``, Gaussian kernel.

    Bandwidth ``h`` = mean squared distance between rows of ``y`` (= 2 x total variance), so the
    value is scale free; ``k(a, b) = exp(-|a - b|^2 / h)``.

    >>> import jax.numpy as jnp
    >>> y = jnp.array([[0.0], [1.0]])
    >>> float(mmd2(y, y))
    0.0
    """
    h = 2.0 * jnp.sum(jnp.var(y, axis=0))
    h = jnp.maximum(h, jnp.finfo(jnp.float32).tiny)

    def k(a, b):
        d2 = (jnp.sum(a**2, -1)[:, None] + jnp.sum(b**2, -1)[None, :] - 2.0 * a @ b.T)
        return jnp.exp(-jnp.maximum(d2, 0.0) / h)

    return jnp.maximum(jnp.mean(k(x, x)) + jnp.mean(k(y, y)) - 2.0 * jnp.mean(k(x, y)), 0.0)
