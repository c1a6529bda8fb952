"""Gaussian with a fraction rho of fresh real data every generation (Alemohammad et al. 2023).

Command:
    collapse-jax run configs/fresh_mixing.py --out runs/fresh_mixing

Setting: d = 2, N(0, I), n = n0 = 100; fresh_real_mix trains every generation on round(rho n)
new real points from the source plus the rest synthetic from the previous model, rho in
{0, 0.1, 0.25, 0.5}; replace as the baseline (= rho 0); 100 generations, 100 seeds.

Expected runtime on 2 idle CPU cores (2026-12-04): 11 s with an empty compilation cache
(compiling 6.6 s), 6 s with the programs in the program store.

Expected result: with rho > 0 the trace ratio settles at a level below but near 1 instead of
decaying (fresh real data keep the chain from collapsing; MAD's "fresh data loop"); rho = 0
reproduces replace. Measured at g = 99 (mean +- s.e., 100 seeds): trace ratio 0.39 +- 0.07 for
rho = 0 (identical to replace: same seeds, the fresh block is drawn but unused; theory 0.366),
0.97 +- 0.02 for rho = 0.1, 1.00 +- 0.02 for 0.25, 1.00 +- 0.01 for 0.5.
"""

from collapse_jax import Experiment


def get_config() -> Experiment:
    return Experiment(
        name="fresh_mixing",
        model="gaussian",
        regimes=("replace", "fresh_real_mix"),
        seeds=100,
        generations=100,
        n=100,
        d=2,
        n_test=200,
        hparams={"sigma": 1.0, "rho": (0.0, 0.1, 0.25, 0.5)},
    )
