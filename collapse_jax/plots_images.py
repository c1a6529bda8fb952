"""Figures of generated images: one row per regime, one column per generation (PNG, Agg).

``plot_sample_grid`` draws given arrays: cell (regime, generation) is a mosaic of samples of that
generation's model (the image families' ``render`` calls it with the samples a run kept).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from collapse_jax.files import atomic_path  # noqa: E402


def mosaic(images: np.ndarray, shape: tuple[int, int], cols: int | None = None) -> np.ndarray:
    """Tile ``images [num, H*W]`` into one ``[rows*(H+1)-1, cols*(W+1)-1]`` array (1-px gaps).

    >>> mosaic(np.ones((4, 4)), (2, 2)).shape
    (5, 5)
    """
    num = images.shape[0]
    h, w = shape
    cols = cols or int(np.ceil(np.sqrt(num)))
    rows = -(-num // cols)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan, np.float32)
    for i in range(num):
        r, c = divmod(i, cols)
        out[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = images[i].reshape(h, w)
    return out


def plot_sample_grid(
    samples: Mapping[str, np.ndarray],
    generations: Sequence[int],
    shape: tuple[int, int],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Write a PNG: a row per regime, a column per generation, a mosaic of samples per cell.

    Args:
        samples: regime -> ``[len(generations), num, H*W]`` pixels in [0, 1].
        generations: generation index of each column.
        shape: ``(H, W)`` of one image.
        path: output file.
        title: figure title.
    """
    regimes = list(samples)
    ncols = len(generations)
    fig, axes = plt.subplots(len(regimes), ncols, figsize=(1.6 * ncols + 1.0, 1.7 * len(regimes)),
                             squeeze=False)
    cmap = plt.get_cmap("gray_r").with_extremes(bad="white")
    for r, regime in enumerate(regimes):
        for c, g in enumerate(generations):
            ax = axes[r, c]
            ax.imshow(mosaic(np.asarray(samples[regime][c]), shape), cmap=cmap, vmin=0.0,
                      vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"g = {g}", fontsize=9)
            if c == 0:
                ax.set_ylabel(regime, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
