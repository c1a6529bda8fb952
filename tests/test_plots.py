"""The run's figures, checked on their text objects: swept values as written (no float32 noise),
"closed form" in a legend only where a closed form is drawn, integer generation ticks, and
everything drawn inside the figure (nothing clipped) with the fixed layout."""

from __future__ import annotations

import dataclasses
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest

import collapse_jax as cj
from collapse_jax.plots import metric_blocks, metric_figure, plot_all


@pytest.fixture(scope="module")
def results():
    exp = cj.Experiment(name="a rather long experiment name that wraps in the title",
                        model="gaussian", regimes=("replace", "accumulate"), seeds=4,
                        generations=5, n=8, d=2, n_test=8,
                        hparams={"scale": (0.9, 0.95, 1.0, 1.1)},
                        metrics=("trace_ratio", "mean_error", "logdet_ratio"))
    return cj.run_experiment(exp)


def _texts(fig):
    return [t for t in fig.findobj(plt.Text) if t.get_visible() and t.get_text().strip()]


def test_every_metric_figure_labels_and_layout(results):
    blocks = metric_blocks(results)
    seen_theory = set()
    for metric in results.metrics:
        fig = metric_figure(results, metric, blocks)
        try:
            fig.canvas.draw()
            axes = [ax for ax in fig.axes if ax.get_visible()]
            assert len(axes) == 4  # one panel per swept value, the 6th slot hidden
            titles = {ax.get_title() for ax in axes}
            assert titles == {"scale=0.9", "scale=0.95", "scale=1.0", "scale=1.1"}, titles
            dashed = any(line.get_linestyle() == "--" for ax in axes for line in ax.get_lines())
            legend = {t.get_text() for t in axes[0].get_legend().get_texts()}
            assert ("closed form" in legend) == dashed, (metric, legend)
            if dashed:
                seen_theory.add(metric)
            assert any("band: middle 50% of chains" in t for t in legend)
            for ax in axes:
                for label in ax.get_xticklabels():
                    if label.get_visible() and label.get_text():
                        assert re.fullmatch(r"[\u2212-]?\d+", label.get_text()), label.get_text()
            drawn = fig.get_tightbbox(fig.canvas.get_renderer())  # inches, all drawn artists
            width, height = fig.get_size_inches()
            assert drawn.x0 >= -0.01 and drawn.y0 >= -0.01, (metric, drawn)
            assert drawn.x1 <= width + 0.01 and drawn.y1 <= height + 0.01, (metric, drawn)
            for text in (t.get_text() for t in _texts(fig)):
                assert not re.search(r"\d\.\d*0000\d", text), text  # no float32 noise
        finally:
            plt.close(fig)
    # the negative control of the legend rule: replace has closed forms here, not every metric
    assert "trace_ratio" in seen_theory and seen_theory != set(results.metrics)


def test_plot_all_writes_a_png_per_metric(results, tmp_path):
    paths = plot_all(results, tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"{m}.png" for m in results.metrics)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_metric_blocks_of_whole_chains_match_the_pivot_of_any_row_order(results):
    """The chains-as-rows grouping (a run's table) gives the blocks the row-wise pivot gives for
    the same rows in another order: same facets, regimes in table order, chains by seed."""
    fast = metric_blocks(results)
    shuffled = results.table.sample(frac=1.0, random_state=0).reset_index(drop=True)
    slow = metric_blocks(dataclasses.replace(results, table=shuffled, derived={}))
    assert list(fast) == list(slow) and len(fast) == 4
    for facet, by_regime in fast.items():
        assert list(by_regime) == ["replace", "accumulate"]
        assert list(slow[facet]) in (["replace", "accumulate"], ["accumulate", "replace"])
        for regime, arrays in by_regime.items():
            for metric, v in arrays.items():
                assert v.shape == (4, 5) and v.dtype == np.float64
                np.testing.assert_array_equal(v, slow[facet][regime][metric])
