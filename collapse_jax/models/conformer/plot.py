"""Pictures of sampled conformers (host only, matplotlib Agg).

``plot_conformers`` draws, per regime (a row), one molecule's held-out real conformers and its
sampled conformers of the first and last snapshot generation as 3D ball-and-stick overlays (each
conformer superposed on the first real one by Kabsch), and a histogram of every sample's RMSD to
the closest held-out real conformer of its molecule (first vs last generation).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from collapse_jax.data.conformers import ELEMENTS, decode_smiles  # noqa: E402
from collapse_jax.files import atomic_path  # noqa: E402

#: Colour of each atom type code (``data.conformers.atom_types``): H, C, N, O, F, P, S, Cl, Br, I.
_COLOURS = dict(zip(range(1, len(ELEMENTS) + 1),
                    ("0.85", "0.3", "tab:blue", "tab:red", "tab:green", "tab:orange", "gold",
                     "limegreen", "brown", "purple"), strict=True))
#: Conformers overlaid per panel.
OVERLAY = 4


def kabsch_np(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """``a [n, 3]`` superposed on ``b [n, 3]`` (proper rotation, SVD) and the RMSD (host).

    >>> x = np.array([[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3]])
    >>> round(kabsch_np(x @ np.diag([-1.0, -1.0, 1.0]) + 2.0, x)[1], 6)
    0.0
    """
    ca, cb = a - a.mean(0), b - b.mean(0)
    u, _, vt = np.linalg.svd(ca.T @ cb)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    r = u @ np.diag([1.0, 1.0, d]) @ vt
    out = ca @ r
    return out + b.mean(0), float(np.sqrt(np.mean(np.sum((out - cb) ** 2, axis=1))))


def nearest_real_rmsd(coords: np.ndarray, mol: np.ndarray, args: Mapping) -> np.ndarray:
    """RMSD of every sample ``coords [num, A, 3]`` (molecules ``mol [num]``) to the closest
    held-out real conformer of its molecule (host, Kabsch over the real atoms)."""
    ref, mask = np.asarray(args["coords_test"]), np.asarray(args["atoms"]) > 0
    out = np.empty(coords.shape[0])
    for i, (x, m) in enumerate(zip(coords, mol, strict=True)):
        w = mask[m]
        out[i] = min(kabsch_np(x[w], r[w])[1] for r in ref[m])
    return out


def _draw(ax, confs: np.ndarray, atoms: np.ndarray, edges: np.ndarray, ref: np.ndarray) -> None:
    w = atoms > 0
    colours = [_COLOURS.get(int(t), "k") for t in atoms[w]]
    bonds = [(i, j) for i in range(len(atoms)) for j in range(i + 1, len(atoms))
             if 1 <= edges[i, j] <= 4]
    for k, x in enumerate(confs):
        y = kabsch_np(x[w], ref[w])[0]
        alpha = 1.0 if k == 0 else 0.45
        full = np.zeros_like(x)
        full[w] = y
        for i, j in bonds:
            ax.plot(*full[[i, j]].T, color="0.4", lw=1.2, alpha=alpha)
        ax.scatter(*y.T, c=colours, s=28, alpha=alpha, edgecolors="k", linewidths=0.3,
                   depthshade=False)
    lim = np.abs(ref[w]).max() + 0.8
    for set_lim in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
        set_lim(-lim, lim)
    ax.set_axis_off()


def plot_conformers(samples: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]],
                    args: Mapping[str, np.ndarray], path: str | os.PathLike,
                    molecule: int = 0) -> Path:
    """Write a PNG of real and sampled conformers of one molecule, per regime.

    Args:
        samples: ``samples[regime][generation]`` is what ``model.sample`` returned for ``num``
            conformers, as numpy: ``coords [num, A, 3]``, ``mol [num]`` (and ``atoms``,
            ``edges``); the first and last generation of each regime are drawn.
        args: the ``conformers`` source's host args (``coords_test``, ``atoms``, ``edges``,
            ``smiles``).
        path: output file (parent directories are created).
        molecule: index of the molecule drawn in 3D.

    Returns:
        ``path``.
    """
    atoms, edges = np.asarray(args["atoms"])[molecule], np.asarray(args["edges"])[molecule]
    real = np.asarray(args["coords_test"])[molecule]
    ref = real[0]
    regimes = list(samples)
    fig = plt.figure(figsize=(13.0, 3.1 * len(regimes) + 0.4))
    for r, regime in enumerate(regimes):
        gens = sorted(samples[regime])
        first, last = gens[0], gens[-1]
        panels = [("held-out real", real[:OVERLAY])]
        for g in dict.fromkeys((first, last)):
            s = samples[regime][g]
            mine = np.asarray(s["coords"])[np.asarray(s["mol"]) == molecule][:OVERLAY]
            panels.append((f"{regime}, g = {g}", mine))
        for c, (title, confs) in enumerate(panels):
            ax = fig.add_subplot(len(regimes), 4, 4 * r + c + 1, projection="3d")
            if len(confs):
                _draw(ax, confs, atoms, edges, ref)
            ax.set_title(title, fontsize=9)
        ax = fig.add_subplot(len(regimes), 4, 4 * r + 4)
        bins = np.linspace(0.0, 3.0, 31)
        for g, colour in ((first, "tab:blue"), (last, "tab:red")):
            s = samples[regime][g]
            rmsd = nearest_real_rmsd(np.asarray(s["coords"]), np.asarray(s["mol"]), args)
            ax.hist(np.minimum(rmsd, bins[-1]), bins=bins, alpha=0.55, color=colour,
                    label=f"g = {g} (median {np.median(rmsd):.2f} A)")
        ax.set_xlabel("RMSD to closest held-out real conformer (A)", fontsize=8)
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
    smiles = decode_smiles(np.asarray(args["smiles"]))[molecule]
    fig.suptitle(f"molecule {molecule}: {smiles} (overlay of {OVERLAY} conformers, aligned)",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
