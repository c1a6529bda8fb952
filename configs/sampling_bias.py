"""Fully synthetic Gaussian chain with biased sampling: variance scale (MAD's lambda).

Command:
    collapse-jax run configs/sampling_bias.py --out runs/sampling_bias

Setting (Alemohammad et al. 2023): d = 2, N(0, I), n = n0 = 100, replace (fully synthetic loop),
each generation samples N(mu_g, scale * Sigma_g) with scale in {0.9, 1.0}; 50 generations, 100
seeds. accumulate as a contrast.

Expected runtime on 2 idle CPU cores (2026-12-04): 10-11 s with an empty compilation cache
(compiling 7 s), 5 s with the programs in the program store.

Expected result: under replace E[trace ratio at g] = q (scale q)^g with q = (n-1)/n (derived in
theory.gaussian_trace_ratio; dashed lines): at g = 49 about 0.0035 for scale 0.9 and 0.61 for
scale 1.0. Measured at g = 49 (100 seeds): replace scale 0.9 0.0039 +- 0.0005
(theory 0.0035), scale 1.0 0.68 +- 0.09 (theory 0.61); accumulate stays at 0.70 (scale 0.9) and
1.00 (scale 1.0): accumulating does not undo a biased sampler, it only slows it.
"""

from collapse_jax import Experiment


def get_config() -> Experiment:
    return Experiment(
        name="sampling_bias",
        model="gaussian",
        regimes=("replace", "accumulate"),
        seeds=100,
        generations=50,
        n=100,
        d=2,
        n_test=200,
        hparams={"sigma": 1.0, "scale": (0.9, 1.0)},
    )
