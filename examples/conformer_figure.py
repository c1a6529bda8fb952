"""The conformer figure of a conformer-diffusion experiment, until the engine draws it itself.

Reruns seed 0 of every regime generation by generation (the same keys as the sweep), samples
``--num`` conformers of the first and last generation's models and draws them with
``plot_conformers``; then prints the table of held-out denoising loss and COV-R / MAT-R per
generation and regime (mean +- s.e. over seeds) of a finished run's ``metrics.csv``.

Usage:
    python examples/conformer_figure.py configs/diffusion_conformers.py \
        --run runs/diffusion_conformers --out runs/diffusion_conformers/conformers.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from collapse_jax import chain as C
from collapse_jax.cli import load_config
from collapse_jax.config import hparams_from
from collapse_jax.model import get_model_spec
from collapse_jax.models.conformer.plot import plot_conformers
from collapse_jax.snapshots import SNAPSHOT_STREAM


def snapshot_samples(static, root, hp, at, num):
    """Samples (a dict of numpy arrays) of chain 0's models at generations ``at``: the chain's
    generations use the sweep's keys; the samples use the snapshot stream, as
    ``snapshots.run_with_snapshots`` (which stacks array samples only, not dicts)."""
    chain = C.make_chain(static)
    args = chain.source.load(static)
    ck = jax.random.fold_in(root, 0)
    real = jax.jit(lambda k, h, a: C.draw_real(chain, k, h, a))(ck, hp, args)
    snap = jax.jit(lambda p, g: chain.model.sample(
        jax.random.fold_in(jax.random.fold_in(ck, SNAPSHOT_STREAM), g), p, real, hp, num))
    state, _ = jax.jit(lambda k, h, r: C.init(chain, k, h, r))(ck, hp, real)
    step = jax.jit(lambda s, g: C.step(chain, s, g, ck, hp, real, args))
    out = {}
    for g in range(static.generations):
        if g:
            state, _ = step(state, jax.numpy.int32(g))
        if g in at:
            out[g] = jax.tree.map(np.asarray, snap(state.params, jax.numpy.int32(g)))
    return out, args


def table(run: Path, metrics=("test_loss", "cov_r", "mat_r")) -> str:
    """Markdown table: metric mean +- s.e. over seeds, per regime and generation."""
    t = pd.read_csv(run / "metrics.csv")
    rows = ["| regime | g | " + " | ".join(metrics) + " |",
            "|---|---|" + "---|" * len(metrics)]
    for (regime, g), grp in t.groupby(["regime", "generation"], sort=False):
        cells = []
        for m in metrics:
            x = grp[m].to_numpy(float)
            cells.append(f"{x.mean():.4f} +- {x.std(ddof=1) / np.sqrt(len(x)):.4f}")
        rows.append(f"| {regime} | {g} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("--run", type=Path, help="output directory of the finished run (table)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--num", type=int, default=40)
    a = p.parse_args()
    exp = load_config(a.config)
    spec = get_model_spec(exp.model)
    hp = hparams_from({k: (v[0] if isinstance(v, tuple) else v)
                       for k, v in {**spec.hparams, **exp.hparams}.items()})
    at = (0, exp.generations - 1)
    samples, args = {}, None
    for regime in exp.regimes:
        static = next(s for s in exp.statics() if s.regime == regime)
        samples[regime], args = snapshot_samples(static, jax.random.key(exp.root_seed), hp, at,
                                                 a.num)
    print(plot_conformers(samples, args, a.out))
    if a.run:
        print(table(a.run))


if __name__ == "__main__":
    main()
