"""Gaussian with a fixed real:synthetic mix every generation (Bertrand et al. 2023).

Command:
    collapse-jax run configs/mixing.py --out runs/mixing

Setting: d = 2, N(0, I), n0 = 100 real points; fixed_real_mix trains every generation on D0 plus
lam * n0 fresh synthetic points from the previous model (older synthetic data dropped), lam in
{0.5, 1, 2, 10} (lam_max = 10: 1000 points sampled per generation, one compile for every lam);
replace and accumulate (n = 100) as baselines; 100 generations, 100 seeds. The baselines ignore
lam, so they are repeated in every lam panel (same seeds, identical numbers).

The fresh-data loop of Alemohammad et al. sweeps a different hyperparameter (rho) over a different
regime; one Experiment takes the product of its swept values over all regimes, so it lives in
configs/fresh_mixing.py.

Expected runtime on 2 idle CPU cores (2026-12-04): 13-14 s with an empty compilation cache
(compiling 9 s), 5 s with the programs in the program store.

Expected result: the trace ratio stays near 1 for every finite lam (the model is anchored to D0;
the stationary shrink is small, larger for larger lam) while it decays as ((n-1)/n)^(g+1) under
replace. Measured at g = 99 (mean +- s.e., 100 seeds): fixed_real_mix trace ratio 0.99 +- 0.01
(lam 0.5), 0.99 +- 0.01 (1), 0.98 +- 0.01 (2), 0.99 +- 0.01 (10); accumulate 1.00 +- 0.01;
replace 0.39 +- 0.07 (theory 0.366).
"""

from collapse_jax import Experiment


def get_config() -> Experiment:
    return Experiment(
        name="mixing",
        model="gaussian",
        regimes=("replace", "accumulate", "fixed_real_mix"),
        seeds=100,
        generations=100,
        n=100,
        d=2,
        n_test=200,
        lam_max=10.0,
        hparams={"sigma": 1.0, "lam": (0.5, 1.0, 2.0, 10.0)},
    )
