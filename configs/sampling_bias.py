"""Fully synthetic Gaussian chain with biased sampling: variance scale (MAD's lambda).

Command:
    collapse-jax run configs/sampling_bias.py --out runs/sampling_bias

Setting (Alemohammad et al. 2023): d = 2, N(0, I), n = n0 = 100, replace (fully synthetic loop),
each generation samples N(mu_g, scale * Sigma_g) with scale in {0.9, 1.0}; 50 generations, 100
seeds. accumulate as a contrast.

Expected runtime on 2 CPU cores: RUNTIME_BIAS

Expected result: under replace E[trace ratio at g] = q (scale q)^g with q = (n-1)/n (derived in
theory.gaussian_trace_ratio; dashed lines): at g = 49 about 0.0035 for scale 0.9 and 0.61 for
scale 1.0. RESULT_BIAS
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
