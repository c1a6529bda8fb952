"""Gaussian mixture refit by EM on its own samples (Shumailov et al.'s GMM setting).

Command:
    collapse-jax run configs/gmm.py --out runs/gmm

Setting: 3 equal-weight 2-D components N(mu_k, 0.5^2 I), means on a circle of radius 3; the model
is a 3-component full-covariance GMM fit by 20 EM iterations warm-started from the previous
generation; n in {20, 100} per generation (n0 = n), 50 generations, 100 seeds, 200 held-out
points; replace, accumulate, accumulate_subsample.

Expected runtime on 2 idle CPU cores (2026-12-04): 69 s with an empty compilation cache
(compiling 52 s, running 36 s, partly at once), 30 s with the programs in the program store
(running 26 s, most of it accumulate with n = 100: EM over a 5000-slot pool); 563 s on the shared
machine at load ~9 earlier.

Expected result: under replace the components lose variance and weight (trace_ratio and
weight_entropy fall towards 0, held-out NLL explodes, faster for n = 20); under accumulate
trace_ratio and weight_entropy stay near their generation-0 values and the NLL stays near its
generation-0 value. Final-generation means: g = 49, mean (100 seeds):

    regime                n    nll       weight_entropy  trace_ratio  means_dist
    generation 0         20    6.18      1.04            0.96         0.16
    generation 0        100    2.66      1.09            0.99         0.016
    replace              20    1.8e5     0.08            0.085        0.52
    replace             100    1952      0.62            0.57         0.37
    accumulate           20    8.04      1.01            0.93         0.20
    accumulate          100    2.73      1.08            0.98         0.025
    accumulate_subsample 20    6.39      0.34            0.88         2.62
    accumulate_subsample 100   2.94      1.06            0.97         0.041

(with a subsample of only 20 points, warm-started EM lets components die: their weight goes to
0 and never recovers, so weight_entropy falls although the variance is kept).
"""

from collapse_jax import Experiment


def get_config() -> Experiment:
    return Experiment(
        name="gmm",
        model="gmm",
        source="mixture",
        regimes=("replace", "accumulate", "accumulate_subsample"),
        seeds=100,
        generations=50,
        n=(20, 100),
        d=2,
        n_test=200,
        hparams={"sigma": 0.5, "radius": 3.0},
        options={"components": 3, "covariance": "full", "init": "warm", "em_iters": 20},
    )
