"""A diffusion model of molecular conformations (GeoDiff-style), refit on its own conformers.

The third neural experiment of Gerstgrasser et al. 2024 (GeoDiff on GEOM-Drugs there), on real
molecules from RDKit (``collapse_jax.data.molecules`` / ``data.conformers``): a DDPM over atom
coordinates in the zero centre-of-mass subspace (``models.conformer.diffusion``) whose noise
predictor is an E(3)-equivariant graph network conditioned on the molecular graph (atom types,
bond types, 2- and 3-hop neighbours: ``models.conformer.egnn``), written with flax ``nnx`` and
split once into a graphdef and a State, so parameters are a plain pytree vmapped over chains.

A pool example is one conformer with its graph (``data.conformers``); ``sample`` draws ``num``
new conformers of the molecules ``i mod M`` (the same round robin as the real data) by ancestral
sampling, one ``lax.scan`` over the ``diffusion_steps`` steps. Fitting is ``fitting.make_sgd_fit``
(Adam, global-norm clip ``clip_norm``, ``schedule`` constant or cosine with ``warmup``; learning
rate ``hparams["lr"]``, vmappable), fresh weights every generation by default
(``init_mode="reinit"``).

Metrics of generation g, on the held-out REAL conformers (the same for every chain; fixed noise,
timesteps and sampling key ``EVAL_SEED``: common random numbers across generations and chains):
    test_loss: the denoising loss (the paper's metric): per-conformer ``sum_atoms |eps_hat -
        eps|^2 / n_atoms``, averaged over the held-out conformers and ``eval_timesteps`` steps
        evenly spaced over ``1..T``, one fixed noise draw each.
    cov_r, mat_r, cov_p, mat_p: coverage and matching (recall and precision) of ``eval_samples``
        generated conformers per molecule (0 = twice the held-out count, as GeoDiff) against the
        molecule's held-out conformers, from Kabsch RMSD over the modelled atoms
        (``models.conformer.rmsd``), averaged over molecules; COV threshold ``cov_threshold``
        (default 0.5 Angstrom: these molecules have 8-16 heavy atoms, and GeoDiff's 1.25 A for
        GEOM-Drugs, ~44 heavy atoms, would count almost any conformer as covered; see
        benchmarks/README.md for the real-vs-real baseline at both thresholds).
    validity: share of those generated conformers whose every bond is within ``bond_tol``
        Angstrom of the molecule's mean real bond length (default 0.25 A, 17% of a C-C bond:
        a bond that far off is broken or squashed; real ETKDG conformers stay within 0.08 A);
        bond_error: mean absolute bond-length deviation (Angstrom), the continuous version.
    train_loss: mean minibatch loss at the end of the fit (on the training pool).

References:
    Gerstgrasser et al. 2024, "Is Model Collapse Inevitable?", arXiv:2404.01413 (GeoDiff: test
        loss 54.7 -> ~400 over 5 iterations under replace, ~80-90 under accumulate).
    Xu et al. 2022, "GeoDiff: a Geometric Diffusion Model for Molecular Conformation
        Generation", ICLR, arXiv:2203.02923.
    Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models", arXiv:2006.11239.
    Satorras, Hoogeboom & Welling 2021, "E(n) Equivariant Graph Neural Networks",
        arXiv:2102.09844.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from collapse_jax.config import POSITIVE, ConfigError, StaticConfig
from collapse_jax.data.conformers import DEFAULTS as SOURCE_DEFAULTS
from collapse_jax.data.conformers import check_atoms, check_sizes, is_smiles_file
from collapse_jax.model import lazy_factory, make_source, register_model

#: Seed of the fixed evaluation noise, timesteps' noise and sampling key (common random numbers).
EVAL_SEED = 4321

_OPTIONS = {
    # data (read by the ``conformers`` source)
    "molecules": (20, 2, 3, 4, 5, 8, 10, 16, 32, 50, 64, 100, 128, 200, 256, 500, 1000),
    "conformers": (30, 4, 5, 6, 8, 10, 12, 16, 20, 40, 50, 64, 100),
    "min_atoms": (8, 2, 3, 4, 5, 6, 10, 12, 16, 20),
    "hydrogens": (False, True),
    "mmff": (False, True),
    "embed_seed": (42, 0, 1, 2, 3, 7, 123),
    # denoiser and diffusion
    "hidden": (32, 8, 16, 64, 128, 256),
    "layers": (3, 1, 2, 4, 5, 6, 8),
    "diffusion_steps": (50, 4, 8, 10, 20, 25, 100, 200, 500, 1000),
    # fit
    "steps": (1000, 5, 10, 20, 50, 100, 200, 300, 400, 500, 1500, 2000, 3000, 5000, 10000, 20000,
              50000),
    "batch": (32, 4, 8, 16, 64, 128, 256),
    "init_mode": ("reinit", "warm"),
    "budget": ("steps", "epochs"),
    "epochs": (1, 2, 3, 5, 10, 20, 50, 100),
    "schedule": ("cosine", "constant"),
    "warmup": (0, 10, 20, 50, 100, 200, 500),
    "clip_norm": (1.0, 0.0, 0.5, 2.0, 5.0, 10.0),
    # evaluation
    "eval_samples": (0, 1, 2, 4, 8, 10, 16, 20, 32, 50, 64, 100),
    "eval_timesteps": (10, 1, 2, 4, 5, 20, 50, 100),
    "cov_threshold": (0.5, 0.25, 0.75, 1.0, 1.25, 1.5, 2.0),
    "bond_tol": (0.25, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5),
    "chunk": (256, 16, 32, 64, 128, 512, 1024, 2048, 4096),
}


def _opt(static: StaticConfig, name: str):
    default = SOURCE_DEFAULTS[name] if name in SOURCE_DEFAULTS else _OPTIONS[name][0]
    return static.option(name, default)


def _check(static: StaticConfig) -> None:
    if static.d < 2:
        raise ConfigError(f"d={static.d}: the padded atom count (max atoms per molecule); "
                          f"must be >= 2")
    if _opt(static, "eval_timesteps") > _opt(static, "diffusion_steps"):
        raise ConfigError(f"options.eval_timesteps={_opt(static, 'eval_timesteps')}: at most "
                          f"diffusion_steps={_opt(static, 'diffusion_steps')}")
    if not static.data_path or is_smiles_file(static.data_path):  # sizes known before RDKit
        check_atoms(static)
        check_sizes(static, _opt(static, "molecules"), _opt(static, "conformers"))


def render_samples(samples: dict, static: StaticConfig, out_dir: str | Path) -> list[Path]:
    """``conformers.png``: one molecule's real and sampled conformers per regime at the first
    and last kept generation, and RMSD histograms (``ModelSpec.render``)."""
    from collapse_jax.models.conformer.plot import plot_conformers  # matplotlib only to draw

    return [plot_conformers(samples, make_source(static).load(static),
                            Path(out_dir) / "conformers.png")]


def eval_timesteps(steps: int, k: int) -> np.ndarray:
    """``k`` steps evenly spaced over ``1..steps`` (midpoints of ``k`` equal bins).

    >>> eval_timesteps(50, 5).tolist()
    [6, 16, 26, 36, 46]
    """
    return (np.floor((np.arange(k) + 0.5) * steps / k) + 1).astype(np.int32)


register_model(
    "conformer_diffusion",
    source="conformers",
    hparams={"lr": 1e-3},
    ranges={"lr": POSITIVE},
    options=_OPTIONS,
    metrics=("test_loss", "cov_r", "mat_r", "cov_p", "mat_p", "validity", "bond_error",
             "train_loss"),
    check=_check,
    doc="DDPM over molecular conformations (RDKit ETKDG conformers), EGNN denoiser (flax nnx)",
    snapshot=80,
    render=render_samples,
    example_regimes=("replace", "accumulate_subsample"),
    example={"n0": 8, "n": 8, "d": 10, "n_test": 4,
             "options": {"molecules": 2, "conformers": 6, "hidden": 8, "layers": 1,
                         "diffusion_steps": 4, "steps": 5, "batch": 4, "eval_samples": 2,
                         "eval_timesteps": 2}},
)(lazy_factory("collapse_jax.models.conformer_diffusion_chain", "make_conformer_diffusion"))
