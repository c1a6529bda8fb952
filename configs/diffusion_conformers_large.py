"""Conformer diffusion refit on its own conformers at a larger scale (meant for an accelerator).

Command:
    collapse-jax run configs/diffusion_conformers_large.py --out runs/diffusion_conformers_large
    collapse-jax run configs/diffusion_conformers_large.py --out /tmp/x --dry-run   # the plan

Setting (GeoDiff experiment of Gerstgrasser et al. 2024, on RDKit's NCI molecules instead of
GEOM-Drugs): 200 drug-like molecules with 8-24 heavy atoms (``d = 24``), 50 ETKDG conformers
each, MMFF-relaxed; 10 per molecule held out (``n_test = 2000``), 40 per molecule train
(``n0 = n = 8000``). EGNN denoiser with 6 layers of width 128, 500 diffusion steps, 20,000 Adam
steps of batch 128 per generation (cosine learning-rate decay after a 500-step warm-up, fresh
weights every generation), 6 generations (the paper's iterations 1-6), 8 seeds, replace vs
accumulate. Sampling and evaluation run in chunks of 512 conformers (``chunk``).

Cost (not measured on an accelerator: none was available when this was written): per chain
and generation 20,000 training steps of 128 conformers x 576 atom pairs, plus 8,000 + 4,000
(evaluation) sampled conformers x 500 denoiser calls. The RDKit generation (10,000 conformers
+ MMFF) runs once on the host before anything compiles, then is cached (1.6 MB .npz): the first
``--dry-run`` took 258 s on 2 shared CPU cores (load ~5), almost all of it RDKit. Its plan:

    plan for 'diffusion_conformers_large' (model conformer_diffusion, float32): 2 groups,
    2 compiles, 16 chains, 96 rows; nothing compiled (dry run)
      regime      n     n0   d  chains  gens  capacity  mem/chain  chunk  chunks
      replace     8000  8000 24  8       6     8000      232.1 MiB  8      1
      accumulate  8000  8000 24  8       6     48000     380.0 MiB  8      1
      peak memory per chunk ~3.0 GiB (budget 11.8 GiB, the CPU host's)

Expected shape (paper, GEOM-Drugs): the held-out denoising loss rises generation after
generation under replace and stays within a bounded band of generation 0 under accumulate.
"""

from collapse_jax import Experiment


def get_config() -> Experiment:
    return Experiment(
        name="diffusion_conformers_large",
        model="conformer_diffusion",
        regimes=("replace", "accumulate"),
        seeds=8,
        generations=6,
        n=8000,
        n0=8000,
        d=24,
        n_test=2000,
        hparams={"lr": 1e-3},
        options={"molecules": 200, "conformers": 50, "mmff": True, "hidden": 128,
                 "layers": 6, "diffusion_steps": 500, "steps": 20000, "batch": 128,
                 "schedule": "cosine", "warmup": 500, "eval_timesteps": 20, "chunk": 512},
    )
