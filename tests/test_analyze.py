"""``collapse_jax.analyze``: the data-volume analysis recovers a known slope and plateau from a
synthetic run directory within its own bootstrap intervals (and excludes a wrong value); the
CLI's one-line errors (exit 2); the columns of ``scaling.csv`` and the figure's log axes; and a
tiny real run that triggers the analysis at its end.
"""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from collapse_jax import analyze as A
from collapse_jax import cli
from collapse_jax.config import ConfigError, Experiment
from collapse_jax.files import write_json
from collapse_jax.plots_scaling import scaling_figure
from collapse_jax.results import columns, config_record, labels
from collapse_jax.store import PARTS
from collapse_jax.tables import write_part
from collapse_jax.validate import resolve

SEEDS, GENS, SIGMA = 200, 40, 0.02
SIZES = (10, 100, 1000)
TAU = 3.5  # accumulate's plateau approach: P (1 - exp(-g / TAU))


def slope_of(n: int) -> float:
    return 5.0 / n


def plateau_of(n: int) -> float:
    return 10.0 / np.sqrt(n)


def curves(regime: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``[SEEDS, GENS]`` synthetic chains: replace a + b g with per-chain intercepts and noise,
    accumulate P (1 - exp(-g / TAU)) with noise of SIGMA P."""
    g = np.arange(GENS, dtype=np.float64)
    if regime == "replace":
        b = slope_of(n)
        base = 1.0 + rng.normal(0.0, 0.5, (SEEDS, 1)) + b * g[None, :]
        return base + rng.normal(0.0, 4.0 * b, (SEEDS, GENS))
    p = plateau_of(n)
    return p * (1.0 - np.exp(-g / TAU))[None, :] + rng.normal(0.0, SIGMA * p, (SEEDS, GENS))


def synthetic_run(path, n=SIZES, hparams=None) -> None:
    """A run directory as ``collapse-jax run`` writes it (config.json, metrics/ parts), whose
    ``mean_error`` column holds ``curves`` instead of simulated chains."""
    exp = Experiment(name="synthetic", model="gaussian", regimes=("replace", "accumulate"),
                     seeds=SEEDS, generations=GENS, n=n, d=2, n_test=8,
                     hparams=hparams or {"sigma": 1.0}, metrics=("mean_error",))
    spec = resolve(exp)
    rng = np.random.default_rng(1)
    for i, static in enumerate(spec.statics):
        block = curves(static.regime, static.n, rng)
        block = np.tile(block, (spec.chains // SEEDS, 1)).astype(np.float32)
        cols = columns(spec, i, {"mean_error": block}, np.arange(spec.chains), 0)
        write_part(path / PARTS / f"g{i}-c0-t0-p0.parquet", cols, labels(spec, i))
    write_json(path / "config.json", config_record(spec))


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    synthetic_run(out)
    assert cli.main(["analyze", str(out)]) == 0
    return out, pd.read_csv(out / "scaling.csv")


def _row(table, regime, n, quantity):
    r = table[(table["regime"] == regime) & (table["n"] == n) & (table["quantity"] == quantity)
              & (table["metric"] == "mean_error")]
    assert len(r) == 1
    return r.iloc[0]


@pytest.mark.parametrize("n", SIZES)
def test_recovers_known_slope_within_its_interval(analyzed, n):
    _, table = analyzed
    r = _row(table, "replace", n, "slope")
    b = slope_of(n)
    assert r["ci_low"] <= b <= r["ci_high"]
    assert r["ci_high"] - r["ci_low"] < 0.1 * b  # tight enough that a wrong slope fails
    assert not r["ci_low"] <= 1.1 * b <= r["ci_high"]
    assert r["n_chains"] == SEEDS


@pytest.mark.parametrize("n", SIZES)
def test_recovers_known_plateau_and_its_generation(analyzed, n):
    _, table = analyzed
    p = plateau_of(n)
    level = _row(table, "accumulate", n, "plateau")
    assert level["ci_low"] <= p <= level["ci_high"]
    assert not level["ci_low"] <= 1.02 * p <= level["ci_high"]
    # first g with 1 - exp(-g / TAU) >= 0.95: g > TAU ln 20 = 10.5
    when = _row(table, "accumulate", n, "plateau_generation")
    assert when["ci_low"] <= 11 <= when["ci_high"] and when["estimate"] == 11
    value = _row(table, "accumulate", n, "value")  # the chain mean at the last generation
    assert value["ci_low"] <= p <= value["ci_high"] and value["generation"] == GENS - 1
    assert _row(table, "replace", n, "value")["generation"] == GENS - 1


def test_scaling_csv_columns_and_figure(analyzed):
    out, table = analyzed
    assert list(table.columns) == ["regime", "n", "size_field", "metric", "generation",
                                   "quantity", "estimate", "ci_low", "ci_high", "n_chains",
                                   "theory"]
    # one row per regime x size x quantity (replace: value, slope; accumulate: + plateau ones)
    assert len(table) == len(SIZES) * (2 + 4)
    assert set(table["size_field"]) == {"n"}
    # the Gaussian's mean error has a closed form under replace only (checked on a real run
    # below; here the column only has to be present where it exists)
    has = table.groupby("regime")["theory"].apply(lambda t: bool(t.notna().all()))
    assert has["replace"] and not has["accumulate"]
    png = (out / "scaling.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    fig = scaling_figure(table, "mean_error", "n")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert legend == {"replace", "accumulate", "closed form"}
    plt.close(fig)


def test_figure_of_a_metric_with_negative_values_uses_a_symlog_axis(analyzed):
    _, table = analyzed
    negative = table.assign(estimate=-table["estimate"], ci_low=-table["ci_high"],
                            ci_high=-table["ci_low"], theory=-table["theory"])
    fig = scaling_figure(negative, "mean_error", "n")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "symlog"
    assert max(len(line.get_xdata()) for line in ax.get_lines()) == len(SIZES)
    plt.close(fig)


def test_bootstrap_is_vectorised_and_deterministic():
    x = np.random.default_rng(0).normal(size=(50, 6))
    a, used = A.bootstrap(x, 5, resamples=200)
    b, _ = A.bootstrap(x, 5, resamples=200)
    assert a == b and used == 50
    assert a["value"][1] < x[:, 5].mean() < a["value"][2]
    x[3, 2] = np.nan  # a chain with a non-finite value is left out
    assert A.bootstrap(x, 5, resamples=20)[1] == 49


@pytest.mark.parametrize("args,words", [
    (["analyze", "/nonexistent/run"], ["DIR=", "no such directory"]),
    (["analyze", "{run}", "--metric", "nope"], ["metric='nope'", "allowed: mean_error"]),
    (["analyze", "{run}", "--generation", "40"], ["generation=40", "0 .. 39"]),
    (["analyze", "{run}", "--size", "d"], ["size='d'", "allowed: n"]),
    (["analyze", "{empty}"], ["config.json"]),
    (["analyze", "{unswept}"], ["sweeps no size field", "sigma"]),
])
def test_cli_errors_are_one_line_exit_2(analyzed, tmp_path, capsys, args, words):
    run, _ = analyzed
    unswept = tmp_path / "unswept"
    synthetic_run(unswept, n=10, hparams={"sigma": (1.0, 2.0)})
    paths = {"run": str(run), "empty": str(tmp_path), "unswept": str(unswept)}
    assert cli.main([a.format(**paths) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("collapse-jax: error:")
    for w in words:
        assert w in err, err


def test_unfinished_run_is_refused(tmp_path):
    synthetic_run(tmp_path)
    (tmp_path / PARTS / "g0-c0-t0-p0.parquet").unlink()
    with pytest.raises(ConfigError, match="not finished"):
        A.load_run(tmp_path)


def test_run_with_a_swept_size_ends_with_the_analysis(tmp_path):
    out = tmp_path / "run"
    args = ["run", "configs/gaussian.py", "--set", "seeds=6", "--set", "generations=3",
            "--set", "n=8,16", "--set", "d=2", "--set", "n_test=8", "--set",
            "regimes=replace,accumulate", "--set", "metrics=trace_ratio", "--out", str(out),
            "--quiet"]
    assert cli.main(args) == 0
    table = pd.read_csv(out / "scaling.csv")
    value = table[(table["quantity"] == "value") & (table["metric"] == "trace_ratio")]
    replace = value[value["regime"] == "replace"].set_index("n")
    for n in (8, 16):  # the closed form ((n - 1) / n)^(g + 1) at the last generation g = 2
        assert replace.loc[n, "theory"] == pytest.approx(((n - 1) / n) ** 3)
        assert replace.loc[n, "n_chains"] == 6
    assert value[value["regime"] == "accumulate"]["theory"].isna().all()
    assert (out / "scaling.png").stat().st_size > 5000
    config = json.loads((out / "config.json").read_text())
    assert A.experiment_from_record(config["experiment"]).n == (8, 16)


def test_linear_quantities_without_resampled_curves_are_the_same_intervals():
    """``plateau=False`` resamples each chain's value and slope instead of whole curves: the
    same multinomial counts, so the same estimates and intervals up to rounding."""
    x = np.random.default_rng(1).normal(size=(300, 12)).cumsum(axis=1)
    full, used = A.bootstrap(x, 7, resamples=400)
    fast, used_fast = A.bootstrap(x, 7, resamples=400, plateau=False)
    assert used == used_fast == 300
    for q in A.QUANTITIES:
        np.testing.assert_allclose(fast[q], full[q], rtol=1e-10, atol=1e-12)
    assert all(np.isnan(fast[q]).all() for q in A.PLATEAU_QUANTITIES)
