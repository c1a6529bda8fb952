"""Gaussian mixture refit by EM on its own samples (Shumailov et al.'s GMM setting).

Command:
    collapse-jax run configs/gmm.py --out runs/gmm

Setting: 3 equal-weight 2-D components N(mu_k, 0.5^2 I), means on a circle of radius 3; the model
is a 3-component full-covariance GMM fit by 20 EM iterations warm-started from the previous
generation; n in {20, 100} per generation (n0 = n), 50 generations, 100 seeds, 200 held-out
points; replace, accumulate, accumulate_subsample.

Expected runtime on 2 CPU cores: RUNTIME_GMM

Expected result: under replace the components lose variance and weight (trace_ratio and
weight_entropy fall towards 0, held-out NLL explodes, faster for n = 20); under accumulate
trace_ratio and weight_entropy stay near their generation-0 values and the NLL stays near its
generation-0 value. Final-generation means: RESULT_GMM
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
