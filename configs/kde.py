"""Gaussian-kernel KDE refit on its own samples (two moons): replace vs accumulate.

Command:
    collapse-jax run configs/kde.py --out runs/kde

Setting (Kazdan et al. 2024, Shumailov et al. 2024): scikit-learn's two moons (noise 0.05), KDE
with fixed bandwidth h = 0.1, n in {10, 100, 1000} examples per generation (n0 = n), 100
generations, 100 seeds, 100 held-out real points per chain; replace, accumulate and
accumulate_subsample (fit on n0 pool points per generation).

Expected runtime on 2 CPU cores: measured 3889 s wall (9 compiles, 66 s; running 3822 s) on the
shared machine under heavy load (load average ~10 on 2 cores; the process got about 20 CPU
minutes). Almost all of it is accumulate with n = 1000 (2969 s): every generation evaluates 100
test points against the full 99,100-slot pool (1e10 kernel evaluations per generation over the
100 chains, in blocks of 2 test points), and accumulate_subsample with n = 1000 (533 s: the
subsample and compaction sort the 99,100-slot pool every generation).

Expected result: held-out NLL grows under replace (the KDE's points do a random walk with kernel
noise h^2 added each generation and thin to a few lineages), fastest for small n; under
accumulate it stays within 2x of generation 0 over 100 generations (it rises slowly for large n,
as the pool is blurred by h^2 per generation, and falls for n = 10, where the extra points smooth
a 10-point KDE). Measured means over 100 seeds (generation 0 -> generation 99, s.e. in brackets):

    n      replace              accumulate            accumulate_subsample
    10     6.94 -> 135 (10)     6.94 -> 3.22 (0.12)   6.94 -> 16.9 (0.9)
    100    0.81 -> 29.5 (3.6)   0.81 -> 1.39 (0.006)  0.81 -> 1.74 (0.03)
    1000   0.71 -> 2.84 (0.04)  0.71 -> 1.33 (0.002)  0.71 -> 1.35 (0.004)

var_ratio (KDE total variance / test variance) at g = 99: replace 0.19 / 1.61 / 2.76, accumulate
1.01 / 1.08 / 1.10 for n = 10 / 100 / 1000.
"""

from collapse_jax import Experiment


def get_config() -> Experiment:
    return Experiment(
        name="kde",
        model="kde",
        source="moons",
        regimes=("replace", "accumulate", "accumulate_subsample"),
        seeds=100,
        generations=100,
        n=(10, 100, 1000),
        d=2,
        n_test=100,
        hparams={"h": 0.1, "noise": 0.05},
        options={"bandwidth": "fixed"},
    )
