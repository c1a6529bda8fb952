"""Speed of the conformer diffusion family: training steps/s and sampling conformers/s for one
chain and for K vmapped chains, and the one-time RDKit conformer generation (then cached).

- ``real_baseline``: COV / MAT of real training conformers against the held-out ones (what a
  perfect model would score) at several thresholds;
- ``rdkit``: ``data.molecules.cached_conformers`` into an empty data directory (ETKDG, and ETKDG
  + MMFF), then the same call again (the cached ``.npz`` read);
- ``train``: ``model.fit`` (``--steps`` Adam steps on a pool of ``n0`` real conformers), one
  chain jitted, and K chains as one ``vmap``-ed program; chain-steps/s = K x steps / seconds;
- ``sample``: ``model.sample`` of ``--num`` conformers (``diffusion_steps`` denoiser calls
  each), one chain and K chains; conformers/s = K x num / seconds.

Compilation is timed separately; the steady state is the median over ``--repeats`` calls.

Usage:
    python benchmarks/bench_conformer.py --chains 1 4 --repeats 3

Appends JSON lines to ``benchmarks/results/conformer.jsonl`` (and prints them).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
from common import append_jsonl, environment, median_time

import collapse_jax as cj
from collapse_jax.chain import draw_real
from collapse_jax.data import molecules as mols
from collapse_jax.pool import init_pool


def _static(a: argparse.Namespace) -> cj.StaticConfig:
    options = {"molecules": a.molecules, "conformers": a.conformers, "hidden": a.hidden,
               "layers": a.layers, "diffusion_steps": a.diffusion_steps, "steps": a.steps,
               "batch": a.batch}
    return cj.StaticConfig(model="conformer_diffusion", regime="replace", n0=a.n0, n=a.num,
                           d=a.d, generations=2, n_test=a.n_test,
                           options=tuple(sorted(options.items())))


def bench_rdkit(a: argparse.Namespace) -> list[dict]:
    """Generation into an empty cache directory, then the cached read."""
    out = []
    rule = mols.SelectionRule(min_atoms=8, max_atoms=a.d)
    for mmff in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["COLLAPSE_JAX_DATA_DIR"] = tmp
            t0 = time.perf_counter()
            mols.cached_conformers(rule, a.molecules, a.conformers, mmff=mmff)
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            mols.cached_conformers(rule, a.molecules, a.conformers, mmff=mmff)
            warm = time.perf_counter() - t0
        del os.environ["COLLAPSE_JAX_DATA_DIR"]
        total = a.molecules * a.conformers
        out.append({"bench": "rdkit", "mmff": mmff, "molecules": a.molecules,
                    "conformers": a.conformers, "d": a.d, "generate_s": round(cold, 3),
                    "conformers_per_s": round(total / cold, 1), "cached_read_s": round(warm, 4)})
    return out


def bench_baseline(a: argparse.Namespace) -> list[dict]:
    """COV / MAT of REAL conformers against the held-out ones (the best a model can hope for):
    per molecule, ``2 R`` real training conformers play the samples (as ``eval_samples = 0``)."""
    from collapse_jax.models.conformer.rmsd import conformer_metrics

    static = _static(a)
    args = cj.make_chain(static).source.load(static)
    ref, train = args["coords_test"], args["coords_train"]
    gen = train[:, : 2 * ref.shape[1]]
    out = []
    for delta in (0.25, 0.5, 0.75, 1.0, 1.25):
        m = conformer_metrics(jnp.asarray(gen), jnp.asarray(ref), jnp.asarray(args["atoms"] > 0),
                              delta)
        out.append({"bench": "real_baseline", "delta": delta, "samples_per_molecule": gen.shape[1],
                    "references_per_molecule": ref.shape[1], "d": a.d, "molecules": a.molecules,
                    **{k: round(float(v), 4) for k, v in m.items()}})
    return out


def bench_model(a: argparse.Namespace) -> list[dict]:
    static = _static(a)
    chain = cj.make_chain(static)
    model, args = chain.model, chain.source.load(static)
    out = []
    for k in a.chains:
        keys = jax.random.split(jax.random.key(0), k)
        hp = {"lr": jnp.full((k,), 1e-3, jnp.float32)}
        real = jax.vmap(lambda key, h: draw_real(chain, key, h, args))(keys, hp)
        params = jax.vmap(lambda key, r, h: model.init(key, r, h))(keys, real, hp)
        pools = jax.vmap(lambda r: init_pool(r.train, a.n0))(real)
        fit = jax.jit(jax.vmap(lambda key, p, q, h: model.fit(key, p, q, h)["net"]))
        sample = jax.jit(jax.vmap(lambda key, p, r, h: model.sample(key, p, r, h, a.num)))
        for name, fn, argv, work in (
                ("train", fit, (keys, pools, params, hp), k * a.steps),
                ("sample", sample, (keys, params, real, hp), k * a.num)):
            t0 = time.perf_counter()
            compiled = fn.lower(*argv).compile()
            compile_s = time.perf_counter() - t0
            med, times = median_time(lambda c=compiled, v=argv: c(*v), a.repeats)
            unit = "chain_steps_per_s" if name == "train" else "conformers_per_s"
            out.append({"bench": name, "chains": k, "compile_s": round(compile_s, 2),
                        "median_s": round(med, 3), "times_s": [round(t, 3) for t in times],
                        unit: round(work / med, 1), "n0": a.n0, "num": a.num,
                        "steps": a.steps, "batch": a.batch, "hidden": a.hidden,
                        "layers": a.layers, "diffusion_steps": a.diffusion_steps, "d": a.d,
                        "molecules": a.molecules})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--chains", type=int, nargs="+", default=[1, 4])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--molecules", type=int, default=20)
    p.add_argument("--conformers", type=int, default=30)
    p.add_argument("--d", type=int, default=12)
    p.add_argument("--n0", type=int, default=400)
    p.add_argument("--num", type=int, default=400)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--diffusion-steps", type=int, default=50)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--skip-rdkit", action="store_true")
    a = p.parse_args()
    env = environment()
    records = ([] if a.skip_rdkit else bench_rdkit(a)) + bench_baseline(a) + bench_model(a)
    for r in records:
        r = {**r, "env": {**env, "loadavg_end": [round(x, 2) for x in os.getloadavg()]}}
        append_jsonl("conformer", r)
        print({k: v for k, v in r.items() if k != "env"}, flush=True)


if __name__ == "__main__":
    main()
