"""Bad input is refused before any compile, with one line naming the field, the value and what is
allowed: ``validate``, ``Experiment.override`` (``--set``), ``cli.load_config``, data sources, the
output directory, and the CLI's exit codes (0 ok, 2 bad input, 1 run failure) and ``--dry-run``.

``BAD_EXPERIMENTS`` / ``BAD_SETS`` / ``BAD_CONFIG_FILES`` are the list of bad inputs the issue's
closing note reports (``python tests/test_validation.py`` prints each with its message).
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

import collapse_jax as cj
from collapse_jax import cli
from collapse_jax import experiment as E
from collapse_jax.config import ConfigError, Experiment
from collapse_jax.model import SOURCES, Source
from collapse_jax.validate import statics, validate

GAUSS = Experiment(name="v", model="gaussian", regimes=("replace",), seeds=2, generations=3,
                   n=8, d=2, n_test=8)
LIN = dataclasses.replace(GAUSS, model="linear_regression", n=6, d=3)

# (id, base, field changes, fragments the one-line message must contain)
BAD_EXPERIMENTS = [
    ("name-empty", GAUSS, {"name": ""}, ["name=''", "non-empty string"]),
    ("model-unknown", GAUSS, {"model": "gausian"},
     ["model='gausian'", "did you mean 'gaussian'", "allowed:", "linear_regression"]),
    ("model-not-str", GAUSS, {"model": 3}, ["model=3", "unknown"]),
    ("regimes-bare-string", GAUSS, {"regimes": "replace"},
     ["regimes='replace'", "tuple of regime names", "('replace',)"]),
    ("regimes-empty", GAUSS, {"regimes": ()}, ["regimes=()", "non-empty tuple"]),
    ("regime-unknown", GAUSS, {"regimes": ("replase",)},
     ["regime='replase'", "did you mean 'replace'", "allowed: replace"]),
    ("regime-repeated", GAUSS, {"regimes": ("replace", "replace")}, ["regimes=", "repeated"]),
    ("seeds-string", GAUSS, {"seeds": "ten"}, ["seeds='ten'", "integer >= 1"]),
    ("seeds-zero", GAUSS, {"seeds": 0}, ["seeds=0", ">= 1"]),
    ("seeds-bool", GAUSS, {"seeds": True}, ["seeds=True", "integer"]),
    ("seeds-too-many", GAUSS, {"seeds": 2**31}, ["seeds=2147483648", "<= 2147483647"]),
    ("generations-zero", GAUSS, {"generations": 0}, ["generations=0", ">= 1"]),
    ("generations-float", GAUSS, {"generations": 3.0}, ["generations=3.0", "integer"]),
    ("n-float", GAUSS, {"n": 1.5}, ["n=1.5", "integer or a tuple of integers"]),
    ("n-negative", GAUSS, {"n": -4}, ["n=-4", ">= 1"]),
    ("n-list", GAUSS, {"n": [8, 16]}, ["n=[8, 16]", "a sweep is a tuple"]),
    ("n-empty-sweep", GAUSS, {"n": ()}, ["n=()", "empty sweep"]),
    ("n-repeated-sweep", GAUSS, {"n": (8, 8)}, ["n=(8, 8)", "repeated values"]),
    ("n-sweep-bad-member", GAUSS, {"n": (8, 0)}, ["n=0", ">= 1"]),
    ("n0-zero", GAUSS, {"n0": 0}, ["n0=0", ">= 1"]),
    ("d-zero", GAUSS, {"d": 0}, ["d=0", ">= 1"]),
    ("n_test-zero", GAUSS, {"n_test": 0}, ["n_test=0", ">= 1"]),
    ("root_seed-negative", GAUSS, {"root_seed": -1}, ["root_seed=-1", ">= 0"]),
    ("chunk_size-zero", GAUSS, {"chunk_size": 0}, ["chunk_size=0", ">= 1"]),
    ("subsample-zero", GAUSS, {"subsample": 0, "regimes": ("accumulate_subsample",)},
     ["subsample=0", ">= 1"]),
    ("source-unknown", GAUSS, {"source": "gauss"},
     ["source='gauss'", "did you mean 'gaussian'", "allowed:"]),
    ("source-not-str", GAUSS, {"source": None}, ["source=None", "string"]),
    ("description-not-str", GAUSS, {"description": 1}, ["description=1", "string"]),
    ("x64-not-bool", GAUSS, {"x64": "yes"}, ["x64='yes'", "True or False"]),
    ("x64-unsupported-model", GAUSS, {"x64": True, "model": "_float32_only"},
     ["x64=True", "model '_float32_only' computes in float32 only", "gaussian"]),
    ("hparams-not-dict", GAUSS, {"hparams": [1.0]}, ["hparams=[1.0]", "dict"]),
    ("hparams-unknown", GAUSS, {"hparams": {"sigmaa": 1.0}},
     ["hparams.sigmaa", "not a hyperparameter of model 'gaussian'", "did you mean 'sigma'",
      "allowed: scale, sigma"]),
    ("hparams-string", GAUSS, {"hparams": {"sigma": "abc"}}, ["hparams.sigma='abc'", "number"]),
    ("hparams-bool", GAUSS, {"hparams": {"sigma": True}}, ["hparams.sigma=True", "number"]),
    ("hparams-nan", GAUSS, {"hparams": {"sigma": math.nan}}, ["hparams.sigma=nan", "finite"]),
    ("hparams-inf", GAUSS, {"hparams": {"scale": math.inf}}, ["hparams.scale=inf", "finite"]),
    ("hparams-negative-sigma", GAUSS, {"hparams": {"sigma": -1.0}},
     ["hparams.sigma=-1.0", "must lie in (0, inf)"]),
    ("hparams-zero-sigma", GAUSS, {"hparams": {"sigma": 0.0}},
     ["hparams.sigma=0.0", "(0, inf)"]),
    ("hparams-negative-scale", GAUSS, {"hparams": {"scale": -0.5}},
     ["hparams.scale=-0.5", "[0, inf)"]),
    ("hparams-negative-in-sweep", GAUSS, {"hparams": {"sigma": (1.0, -2.0)}},
     ["hparams.sigma=-2.0", "(0, inf)"]),
    ("hparams-linreg-negative-sigma", LIN, {"hparams": {"sigma": -0.1}},
     ["hparams.sigma=-0.1", "[0, inf)"]),
    ("hparams-float32-overflow", GAUSS, {"hparams": {"sigma": 1e39}},
     ["hparams.sigma=1e+39", "overflows float32", "x64=True"]),
    ("hparams-float32-underflow", GAUSS, {"hparams": {"sigma": 1e-40}},
     ["hparams.sigma=1e-40", "underflows float32"]),
    ("hparams-empty-sweep", GAUSS, {"hparams": {"sigma": ()}}, ["hparams.sigma=()", "empty"]),
    ("hparams-repeated-sweep", GAUSS, {"hparams": {"sigma": (1.0, 1.0)}},
     ["hparams.sigma=(1.0, 1.0)", "repeated"]),
    ("options-not-dict", GAUSS, {"options": "unbiased"}, ["options='unbiased'", "dict"]),
    ("options-unknown", GAUSS, {"options": {"unbiassed": True}},
     ["options.unbiassed", "did you mean 'unbiased'", "allowed: fast_path, unbiased"]),
    ("metrics-unknown", GAUSS,
     {"metrics": ("trace_ratio", "tracee_ratio")},
     ["metrics: 'tracee_ratio'", "did you mean 'trace_ratio'",
      "allowed: trace_ratio, logdet_ratio"]),
    ("metrics-not-tuple", GAUSS, {"metrics": "w2"}, ["metrics='w2'", "tuple of metric names"]),
    ("metrics-repeated", GAUSS, {"metrics": ("w2", "w2")}, ["metrics=('w2', 'w2')", "repeated"]),
    ("options-bad-value", GAUSS, {"options": {"unbiased": 1}},
     ["options.unbiased=1", "allowed values are [False, True]"]),
    ("subsample-without-regime", GAUSS, {"subsample": 4},
     ["subsample=4", "accumulate_subsample", "regimes=('replace',)"]),
    ("subsample-over-capacity", GAUSS, {"regimes": ("accumulate_subsample",), "subsample": 100},
     ["subsample=100", "capacity 24 for n0=8, n=8, generations=3", "subsample <= 24"]),
    ("capacity-over-int32", GAUSS, {"regimes": ("accumulate",), "n": 2**20, "generations": 2**12},
     ["regime='accumulate'", "capacity 4294967296", "int32"]),
    ("gaussian-one-point", GAUSS, {"n": 1}, ["n=1", "at least 2 points", "n >= 2"]),
    ("gaussian-one-point-subsample", GAUSS,
     {"regimes": ("accumulate_subsample",), "subsample": 1}, ["subsample=1", "at least 2"]),
    ("linreg-n-below-d", LIN, {"n": 2, "d": 5},
     ["n=2, d=5", "needs n >= d", "use n >= 5", "n >= 7 for the closed forms"]),
    ("linreg-n-below-d-in-sweep", LIN, {"n": (10, 4), "d": 5}, ["n=4, d=5", "n >= 5"]),
    ("linreg-n-neq-n0", LIN, {"n0": 10}, ["n=6, n0=10", "must equal n0"]),
    ("linreg-subsample-below-d", LIN,
     {"regimes": ("accumulate_subsample",), "subsample": 2}, ["subsample=2, d=3", ">= 3"]),
]


@pytest.fixture
def float32_only_model(monkeypatch):
    """A registered family that does not declare float64 support."""
    spec = dataclasses.replace(cj.MODELS["gaussian"], name="_float32_only", float64=False)
    monkeypatch.setitem(cj.MODELS, "_float32_only", spec)


def _assert_one_line(msg: str, fragments) -> None:
    """A one-line message containing every fragment."""
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"


@pytest.mark.parametrize("base,changes,fragments",
                         [c[1:] for c in BAD_EXPERIMENTS], ids=[c[0] for c in BAD_EXPERIMENTS])
@pytest.mark.usefixtures("float32_only_model")
def test_bad_experiment_is_one_line_naming_field_value_and_allowed(base, changes, fragments):
    with pytest.raises(ConfigError) as info:
        validate(dataclasses.replace(base, **changes))
    _assert_one_line(str(info.value), fragments)


def test_valid_experiments_pass():
    for exp in (GAUSS, LIN, dataclasses.replace(GAUSS, n=(8, 16), hparams={"sigma": (0.5, 2.0)}),
                dataclasses.replace(GAUSS, regimes=("accumulate_subsample",), subsample=24),
                dataclasses.replace(GAUSS, hparams={"scale": 0.0}, x64=True),
                dataclasses.replace(LIN, n=3, d=3, hparams={"sigma": 0.0})):
        assert validate(exp) is exp


def test_hparam_ranges_are_declared_for_every_registered_hyperparameter():
    from collapse_jax.regimes import REGIME_RANGES
    from collapse_jax.validate import hparam_range

    for name, spec in cj.MODELS.items():
        for k, default in spec.hparams.items():
            r = hparam_range(name, k)
            assert r is not None, f"{name}: hyperparameter {k!r} declares no range"
            assert r.contains(default), f"{name}: default {k}={default} outside {r}"
    # mixing fractions of the real-mix regimes: never negative; rho at most 1 (lam at most the
    # static lam_max, checked by validate)
    assert REGIME_RANGES["lam"].lo == 0 and str(REGIME_RANGES["rho"]) == "[0, 1]"


def test_shared_range_registry_checks_regime_hyperparameters(monkeypatch):
    """A regime hyperparameter (``regimes.REGIME_HPARAMS``) is checked against
    ``regimes.REGIME_RANGES``."""
    from collapse_jax import regimes
    from collapse_jax.config import UNIT

    monkeypatch.setitem(regimes.REGIME_HPARAMS, "replace", {"mixfrac": 0.5})
    monkeypatch.setitem(regimes.REGIME_RANGES, "mixfrac", UNIT)
    validate(dataclasses.replace(GAUSS, hparams={"mixfrac": 1.0}))
    for bad in (1.5, -0.1):
        with pytest.raises(ConfigError, match=rf"hparams.mixfrac={bad}: must lie in \[0, 1\]"):
            validate(dataclasses.replace(GAUSS, hparams={"mixfrac": bad}))


# (id, --set items, fragments)
BAD_SETS = [
    ("unknown-key", ["seedz=3"], ["--set seedz=3", "did you mean 'seeds'", "known keys:"]),
    ("unknown-hparam-prefixed", ["hparams.sigmaa=2"], ["did you mean 'hparams.sigma'"]),
    ("unknown-option-prefixed", ["options.unbiassed=True"], ["did you mean 'options.unbiased'"]),
    ("misspelt-prefix", ["hparam.sigma=2"], ["did you mean 'hparams.sigma'"]),
    ("unknown-bare-hparam", ["sigmaa=1"], ["did you mean 'sigma'"]),
    ("no-equals", ["seeds"], ["--set 'seeds'", "expected key=value"]),
]


@pytest.mark.parametrize("items,fragments", [c[1:] for c in BAD_SETS],
                         ids=[c[0] for c in BAD_SETS])
def test_bad_override_is_one_line_with_did_you_mean(items, fragments):
    with pytest.raises(ConfigError) as info:
        cj.override(GAUSS, items)
    _assert_one_line(str(info.value), fragments)


@pytest.mark.parametrize("items,fragments", [
    (["seeds=ten"], ["seeds='ten'"]),
    (["n=1.5"], ["n=1.5"]),
    (["hparams.sigma=-1"], ["hparams.sigma=-1", "(0, inf)"]),
    (["sigma=abc"], ["hparams.sigma='abc'"]),
    (["regime=replace,bogus"], ["regime='bogus'"]),
    (["x64=maybe"], ["x64='maybe'"]),
])
def test_override_values_are_checked_by_validate(items, fragments):
    exp = cj.override(GAUSS, items)
    with pytest.raises(ConfigError) as info:
        validate(exp)
    for f in fragments:
        assert f in str(info.value)


def test_override_sets_fields_hparams_options_and_x64():
    exp = cj.override(GAUSS, ["regime=replace,accumulate", "sigma=2", "options.unbiased=True",
                          "hparams.scale=0.5,1", "x64=True"])
    assert exp.regimes == ("replace", "accumulate") and exp.x64 is True
    assert exp.hparams == {"sigma": 2, "scale": (0.5, 1)} and exp.options == {"unbiased": True}
    validate(exp)


def test_bad_config_is_refused_before_any_compile(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("compiled or ran a sweep for an invalid config")

    monkeypatch.setattr(E, "prepare_sweep", boom)
    with pytest.raises(ConfigError, match="seeds='ten'"):
        E.run_experiment(dataclasses.replace(GAUSS, seeds="ten"))


@pytest.fixture
def file_source(monkeypatch, tmp_path):
    """A source reading ``data.npy`` from ``tmp_path`` (as data sources with files do)."""
    path = tmp_path / "data.npy"

    def factory(static):
        def load(static):
            x = np.load(path)
            if x.ndim != 2 or x.shape[1] != static.d:
                raise ValueError(f"{path.name}: expected shape [N, {static.d}], got {x.shape}")
            return {"x": x}

        return Source(load, SOURCES["gaussian"](static).draw)

    monkeypatch.setitem(SOURCES, "npyfile", factory)
    return path


def test_missing_or_malformed_data_file_is_a_config_error_before_any_compile(
        file_source, monkeypatch):
    monkeypatch.setattr(E, "prepare_sweep", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("compiled before the data was checked")))
    exp = dataclasses.replace(GAUSS, source="npyfile")
    with pytest.raises(ConfigError, match=r"source='npyfile': cannot load its data: "
                                          r"FileNotFoundError: .*data\.npy"):
        E.run_experiment(exp)
    file_source.write_bytes(b"not a numpy file")
    with pytest.raises(ConfigError, match=r"source='npyfile': cannot load its data: ValueError"):
        E.run_experiment(exp)
    np.save(file_source, np.zeros((4, 5), np.float32))
    with pytest.raises(ConfigError, match=r"expected shape \[N, 2\], got \(4, 5\)"):
        E.run_experiment(exp)


# ----------------------------------------------------------------------------------------------
# Config files (cli.load_config)

BAD_CONFIG_FILES = [
    ("missing", None, ["config=", "no such file or config name", "known configs:"]),
    ("not-python", "x.txt", ["not a python file"]),
    ("syntax-error", "def get_config(:\n", ["failed to load: SyntaxError", "line 1"]),
    ("import-error", "import not_a_module_xyz\n", ["failed to load: ModuleNotFoundError"]),
    ("no-get_config", "X = 1\n", ["defines no get_config()"]),
    ("get_config-raises", "def get_config():\n    raise RuntimeError('boom')\n",
     ["get_config() failed: RuntimeError: boom"]),
    ("unknown-field", "from collapse_jax import Experiment\n"
     "def get_config():\n    return Experiment(name='x', model='gaussian', seed=3)\n",
     ["Experiment has no field 'seed'", "did you mean 'seeds'"]),
    ("wrong-type", "def get_config():\n    return {'name': 'x'}\n",
     ["get_config() must return an Experiment, got dict"]),
]


@pytest.mark.parametrize("text,fragments", [c[1:] for c in BAD_CONFIG_FILES],
                         ids=[c[0] for c in BAD_CONFIG_FILES])
def test_bad_config_file_is_one_line(tmp_path, text, fragments):
    if text is None:
        ref = str(tmp_path / "nope.py")
    elif text == "x.txt":
        ref = tmp_path / "x.txt"
        ref.write_text("")
        ref = str(ref)
    else:
        ref = tmp_path / "cfg.py"
        ref.write_text(text)
        ref = str(ref)
    with pytest.raises(ConfigError) as info:
        cli.load_config(ref)
    _assert_one_line(str(info.value), fragments)


# ----------------------------------------------------------------------------------------------
# The CLI: exit codes, --dry-run, output directory

TINY = ["--set", "seeds=2", "--set", "generations=3", "--set", "n=6", "--set", "d=2",
        "--set", "n_test=8", "--set", "regime=replace", "--set", "chunk_size=2", "--quiet"]


def _run(capsys, *args):
    code = cli.main(["run", "configs/gaussian.py", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def test_exit_2_on_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "o"
    for args in (["--set", "seeds=ten"], ["--set", "n=1.5"], ["--set", "sigma=-1"]):
        code, _, err = _run(capsys, *args, "--out", str(out))
        assert code == 2 and len(err.splitlines()) == 1 and err.startswith("collapse-jax: error:")
    assert not out.exists()
    code = cli.main(["run", str(tmp_path / "missing.py"), "--out", str(out)])
    assert code == 2 and "no such file" in capsys.readouterr().err


def test_exit_1_on_run_failure_one_line_traceback_only_with_debug(tmp_path, capsys, monkeypatch):
    def boom(*a, **k):
        raise FloatingPointError("simulated failure\nsecond line")

    monkeypatch.setattr(E, "prepare_sweep", boom)
    code, _, err = _run(capsys, *TINY, "--out", str(tmp_path / "a"))
    assert code == 1
    assert err.splitlines() == [
        "collapse-jax: run failed: FloatingPointError: simulated failure second line "
        "(rerun with --debug for the traceback)"]
    code, _, err = _run(capsys, *TINY, "--out", str(tmp_path / "b"), "--debug")
    assert code == 1 and "Traceback (most recent call last)" in err
    assert err.splitlines()[-1] == (
        "collapse-jax: run failed: FloatingPointError: simulated failure second line")
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["complete"] is False and "FloatingPointError" in summary["error"]


def test_dry_run_prints_the_plan_and_compiles_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(E, "prepare_sweep", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("dry run ran a sweep")))
    import jax

    def no_compile(*a, **k):
        raise AssertionError("dry run compiled")

    monkeypatch.setattr(jax.stages.Lowered, "compile", no_compile)
    out = tmp_path / "dry"
    code, text, err = _run(capsys, "--set", "seeds=5", "--set", "generations=7", "--set",
                           "n=6,12", "--set", "hparams.sigma=1,2", "--out", str(out),
                           "--dry-run")
    assert code == 0, err
    assert "6 groups, 6 compiles, 60 chains, 420 rows" in text
    lines = [ln for ln in text.splitlines() if ln.strip().startswith(("replace", "accumulate"))]
    assert len(lines) == 6 and all(" 10 " in ln and " 7 " in ln for ln in lines)
    assert "KiB" in text and "peak memory per device" in text
    assert not out.exists()
    from collapse_jax.plan import bytes_per_chain, plan_run
    from collapse_jax.regimes import make_regime

    spec = cj.resolve(cj.override(cli.load_config("configs/gaussian.py"),
                                  ["seeds=5", "generations=7", "n=6,12", "regime=replace"]))
    plans = plan_run(spec)
    assert len(plans) == 2 and spec.chains * len(plans) == 10
    static = statics(cj.Experiment(name="p", model="gaussian", regimes=("replace",), seeds=5,
                                   generations=7, n=6, d=10, n_test=200))[0]
    assert plans[0].bytes_per_chain == bytes_per_chain(static, {})
    assert make_regime(spec.statics[0]).capacity == 6
    code, _, err = _run(capsys, "--set", "seeds=0", "--out", str(out), "--dry-run")
    assert code == 2 and "seeds=0" in err


def test_output_dir_holding_a_different_run_is_refused(tmp_path, capsys, monkeypatch):
    from collapse_jax import plots

    monkeypatch.setattr(plots, "plot_all", lambda results, out: [])  # figures: not tested here
    out = tmp_path / "run"
    assert _run(capsys, *TINY, "--out", str(out))[0] == 0
    before = (out / "metrics.csv").read_text()
    # the same run again is fine (deterministic), and so is --resume of it; chunk_size does not
    # change the results, so it does not make a different run. (chunk_size=4 for 2 seeds: plans
    # keep >= 2 chains per device, the documented bitwise guarantee; an explicit chunk_size=1 is
    # honoured, and XLA lowers a batch of one chain differently: last-ulp differences, see
    # plan.MIN_CHAINS_PER_DEVICE.)
    assert _run(capsys, *TINY, "--out", str(out))[0] == 0
    assert _run(capsys, *TINY, "--set", "chunk_size=4", "--out", str(out))[0] == 0
    assert _run(capsys, *TINY, "--out", str(out), "--resume")[0] == 0
    assert (out / "metrics.csv").read_text() == before
    # a different run is refused, naming what differs
    code, _, err = _run(capsys, *TINY, "--set", "seeds=3", "--out", str(out))
    assert code == 2 and len(err.splitlines()) == 1
    assert "already holds a different run" in err and "seeds: 2 -> 3" in err
    assert "--overwrite" in err
    code, _, err = _run(capsys, *TINY, "--set", "seeds=3", "--out", str(out), "--resume")
    assert code == 2 and "--resume, but it holds a different run" in err
    code, _, err = _run(capsys, *TINY, "--out", str(out), "--resume", "--overwrite")
    assert code == 2 and "choose one" in err
    assert (out / "metrics.csv").read_text() == before
    # a dry run reports the refusal too, and never removes anything
    code, _, err = _run(capsys, *TINY, "--set", "seeds=3", "--out", str(out), "--dry-run")
    assert code == 2 and "already holds a different run" in err
    code, text, _ = _run(capsys, *TINY, "--set", "seeds=3", "--out", str(out), "--dry-run",
                         "--overwrite")
    assert code == 0 and "--overwrite would replace it" in text
    assert (out / "metrics.csv").read_text() == before
    # --overwrite replaces it
    assert _run(capsys, *TINY, "--set", "seeds=3", "--out", str(out), "--overwrite")[0] == 0
    assert json.loads((out / "config.json").read_text())["experiment"]["seeds"] == 3
    # a non-empty directory that holds no run
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, _, err = _run(capsys, *TINY, "--out", str(other))
    assert code == 2 and "holds no collapse-jax run" in err
    assert (other / "notes.txt").read_text() == "mine"
    # a file where the directory should be
    code, _, err = _run(capsys, *TINY, "--out", str(other / "notes.txt"))
    assert code == 2 and "is not a directory" in err


if __name__ == "__main__":  # the closing note: every bad input and the message it produced
    import tempfile
    from pathlib import Path

    spec = dataclasses.replace(cj.MODELS["gaussian"], name="_float32_only", float64=False)
    cj.MODELS["_float32_only"] = spec
    for _name, base, changes, _ in BAD_EXPERIMENTS:
        try:
            validate(dataclasses.replace(base, **changes))
            print(f"| {_name} | ACCEPTED |")
        except ConfigError as e:
            print(f"| `{base.model}` {changes} | {e} |")
    for _name, items, _ in BAD_SETS:
        try:
            cj.override(GAUSS, items)
        except ConfigError as e:
            print(f"| `--set {' '.join(items)}` | {e} |")
    with tempfile.TemporaryDirectory() as tmp:
        for _name, text, _ in BAD_CONFIG_FILES:
            if text is None:
                ref = str(Path(tmp) / "nope.py")
            else:
                ref = Path(tmp) / ("x.txt" if text == "x.txt" else "cfg.py")
                ref.write_text("" if text == "x.txt" else text)
            try:
                cli.load_config(str(ref))
            except ConfigError as e:
                print(f"| config file: {_name} | {e} |")
