"""Figures of generated images: one row per regime, one column per generation (PNG, Agg).

``sample_grid_figure`` runs the first seed of every regime of an image experiment with
``snapshots.run_with_snapshots`` and writes ``samples.png``: cell (regime, generation) is a
mosaic of samples of that generation's model. ``plot_sample_grid`` only draws given arrays.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from collapse_jax.config import ConfigError, Experiment  # noqa: E402


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def snapshot_generations(generations: int, count: int = 5) -> tuple[int, ...]:
    """About ``count`` generations spread over ``0 .. generations - 1`` (first and last included).

    >>> snapshot_generations(10)
    (0, 2, 4, 7, 9)
    """
    return tuple(sorted(set(np.linspace(0, generations - 1, count).round().astype(int).tolist())))


def is_image_experiment(exp: Experiment) -> bool:
    """Whether the experiment's source is an image source (so a sample grid makes sense)."""
    from collapse_jax.data.images import IMAGE_SOURCES
    from collapse_jax.model import get_model_spec

    return (exp.source or get_model_spec(exp.model).source) in IMAGE_SOURCES


def sample_grid_figure(
    exp: Experiment, path: str | os.PathLike, num: int = 16, seed: int = 0,
    at: Sequence[int] | None = None,
) -> Path:
    """Run seed ``seed`` of every regime of an image experiment and write the sample grid PNG.

    Uses the experiment's first static value of each regime and the default of every swept
    hyperparameter (its first value).
    """
    import jax

    from collapse_jax.data.images import IMAGE_SOURCES
    from collapse_jax.model import get_model_spec, make_source
    from collapse_jax.snapshots import run_with_snapshots

    spec = get_model_spec(exp.model)
    source = exp.source or spec.source
    if source not in IMAGE_SOURCES:
        raise ConfigError(f"source={source!r}: sample grids need an image source")
    at = tuple(at) if at is not None else snapshot_generations(exp.generations)
    merged = {**spec.hparams, **exp.hparams}
    hp = {k: v[0] if isinstance(v, tuple) else v for k, v in merged.items()}
    samples = {}
    for regime in exp.regimes:
        static = next(s for s in exp.statics() if s.regime == regime)
        args = make_source(static).load(static)
        snaps = run_with_snapshots(static, jax.random.key(exp.root_seed), [seed], hp, args, at, num)
        samples[regime] = snaps.samples[0]
    return plot_sample_grid(samples, at, IMAGE_SOURCES[source].shape, path,
                            title=f"{exp.name}: samples by generation (seed {seed})")
