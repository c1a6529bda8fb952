"""Validation (``collapse_jax.validate``): a bad experiment is refused before any compile with one
line naming the field, the value and what is allowed (``BAD_EXPERIMENTS``: ``python
tests/test_validate.py`` prints each with its message); valid experiments pass; every registered
and regime hyperparameter has a range; a data source's missing or malformed file is a
``ConfigError``. Property tests (hypothesis, below) run random valid experiments end to end and
throw random corruptions and ``--set`` strings at validation.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import collapse_jax as cj
from collapse_jax import StaticConfig
from collapse_jax import experiment as E
from collapse_jax.chain import make_chain
from collapse_jax.config import ConfigError, Experiment
from collapse_jax.model import SOURCES, Source
from collapse_jax.regimes import regime_hparams
from collapse_jax.validate import experiment_hparam_range, known_hparams, statics, validate

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


def test_new_experiment_fields_are_validated():
    for field, value in [("generation_chunk", 0), ("keep_checkpoints", 0),
                         ("generation_chunk", 1.5), ("checkpoint_seconds", -1)]:
        with pytest.raises(ConfigError, match=field):
            cj.validate(cj.Experiment(name="v", model="gaussian", **{field: value}))


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


def _exp(**kw):
    base = dict(name="t", model="gaussian", regimes=("fixed_real_mix",), n=10, d=2, n_test=5,
                generations=3, seeds=2)
    return Experiment(**{**base, **kw})


def test_regime_hparams_are_accepted_and_ranged():
    assert regime_hparams(("replace", "fixed_real_mix", "fresh_real_mix")) == {
        "lam": 1.0, "rho": 0.5}
    validate(_exp(lam_max=10.0, hparams={"lam": (0.5, 10.0)}))
    with pytest.raises(ConfigError, match=r"hparams.lam=2.0: must lie in \[0, lam_max=1.0\]"):
        validate(_exp(hparams={"lam": (0.5, 2.0)}))
    with pytest.raises(ConfigError, match=r"hparams.rho=1.5: must lie in \[0, 1\]"):
        validate(_exp(regimes=("fresh_real_mix",), hparams={"rho": 1.5}))
    with pytest.raises(ConfigError, match=r"hparams.rho: not a hyperparameter .*allowed: lam, "):
        validate(_exp(hparams={"rho": 0.5}))  # rho belongs to fresh_real_mix only
    with pytest.raises(ConfigError, match="lam_max=0"):
        validate(_exp(lam_max=0))
    with pytest.raises(ConfigError, match="window=0"):
        validate(_exp(regimes=("window",), window=0))
    e = cj.override(_exp(), ["lam=0.25", "window=4", "lam_max=2.0"])
    assert e.hparams["lam"] == 0.25 and e.window == 4 and statics(e)[0].lam_max == 2.0


def test_fresh_real_mix_needs_a_source_with_fresh():
    static = StaticConfig(model="linear_regression", regime="fresh_real_mix", n0=12, n=12, d=3,
                          generations=2, n_test=4)
    with pytest.raises(ConfigError, match="cannot draw fresh real data"):
        make_chain(static)
    with pytest.raises(ConfigError, match="source='linear': the source cannot draw"):
        validate(Experiment(name="t", model="linear_regression", regimes=("fresh_real_mix",),
                            n=12, d=3))


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
# Property tests over the configuration space (hypothesis)
#
# - Valid side: random valid experiments (every registered model and every regime, via a small
#   cover of (model, regime) pairs; the model's ``example`` sizes; random hyperparameters over
#   their whole declared range; random seeds and sweeps) run end to end and give a complete
#   table: every chain x generation row, no NaN/inf except in rows flagged ``nonfinite``.
#   Compiles are shared: one static shape per pair and exactly ``CHAINS`` chains (seeds x
#   hyperparameter grid) in every example, so after the first example of a pair only
#   hyperparameter values, seeds and the root key change, which never recompiles.
# - Invalid side (validation only, nothing compiles): random corruptions of valid experiments and
#   random ``--set`` strings are rejected with a one-line ``ConfigError`` (never another
#   exception), and targeted corruptions always are, naming the field.
#
# About 1000 examples in all; derandomized so CI time and outcomes are stable.


MODELS = sorted(cj.MODELS)
REGIMES = list(cj.REGIMES)
GENERATIONS = 3
CHAINS = 4
LAYOUTS = [(4, 1), (2, 2), (1, 4)]  # (seeds, hyperparameter grid size): always CHAINS chains
FLOAT32_MAX = float(np.finfo(np.float32).max)

FAST = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _base(model: str, regime: str, seeds: int = 2) -> Experiment:
    ex = dict(cj.MODELS[model].example)
    options = ex.pop("options", {})
    return Experiment(name="prop", model=model, regimes=(regime,), seeds=seeds,
                      generations=GENERATIONS, options=options, **ex)


def _applies(exp: Experiment) -> bool:
    try:
        validate(exp)
    except ConfigError:
        return False
    return True


#: (model, regime) pairs the registry accepts at the example sizes (a regime may not apply to a
#: model, e.g. a real-data mix without a real-data source).
PAIRS = [(m, r) for m in MODELS for r in REGIMES if _applies(_base(m, r))]


def _cover(pairs):
    """Few pairs in which every model and every regime appears (greedy set cover).

    Each pair is one compile; every pair is compiled and run by the contract tests, so the
    end-to-end property runs over a cover (about max(models, regimes) compiles) instead.
    """
    need_m, need_r = {m for m, _ in pairs}, {r for _, r in pairs}
    chosen = []
    while need_m or need_r:
        best = max(pairs, key=lambda p: (p[0] in need_m) + (p[1] in need_r))
        chosen.append(best)
        need_m.discard(best[0])
        need_r.discard(best[1])
    return chosen


RUN_PAIRS = _cover(PAIRS)


def _costly(model: str) -> bool:
    """A family whose every compile is costly (it names ``example_regimes``: the neural ones)."""
    return cj.MODELS[model].example_regimes is not None


#: The end-to-end property runs the cheap families' pairs in CI and the costly (neural) ones
#: with ``pytest -m slow``: their first compile is 13-30 s each on 2 cores, and the contract tests
#: run each of them in CI.
CI_RUN_PAIRS = _cover([p for p in PAIRS if not _costly(p[0])])
SLOW_RUN_PAIRS = [p for p in RUN_PAIRS if _costly(p[0])]


def hparam_values(exp: Experiment, name: str, default: float):
    """float32 values anywhere in the declared range (boundaries and huge values included)."""
    r = experiment_hparam_range(exp, name)
    if r is None:
        return st.just(default)
    lo, hi = (float(np.float32(max(min(x, FLOAT32_MAX), -FLOAT32_MAX))) for x in (r.lo, r.hi))
    values = st.floats(min_value=lo, max_value=hi, exclude_min=r.lo_open,
                       exclude_max=r.hi_open and r.hi == hi, allow_nan=False,
                       allow_infinity=False, allow_subnormal=False, width=32)
    # everyday magnitudes most of the time, extremes (overflow in squares, 0) sometimes
    m_lo, m_hi = max(lo, float(np.float32(1e-2))), min(hi, 100.0)
    moderate = st.floats(min_value=m_lo, max_value=m_hi, width=32) if m_lo <= m_hi else values
    return st.one_of(moderate, moderate, moderate, values)


@st.composite
def valid_experiments(draw, pairs):
    model, regime = draw(st.sampled_from(pairs))
    seeds, grid = draw(st.sampled_from(LAYOUTS))
    base = _base(model, regime, seeds)
    names = sorted(known_hparams(base).items())
    hparams = {}
    swept = draw(st.sampled_from([k for k, _ in names])) if grid > 1 and names else None
    for k, default in names:
        values = hparam_values(base, k, default)
        if k == swept:
            hparams[k] = tuple(draw(st.lists(values, min_size=grid, max_size=grid, unique=True)))
        elif draw(st.booleans()):
            hparams[k] = draw(values)
    if grid > 1 and swept is None:
        assume(False)
    # chunk_size fixed: skips the memory estimate (a trace of the chain) in every example
    exp = dataclasses.replace(base, hparams=hparams, chunk_size=CHAINS,
                              root_seed=draw(st.integers(0, 2**32 - 1)))
    return validate(exp)


def test_run_pairs_cover_every_model_and_regime():
    assert {m for m, _ in RUN_PAIRS} == {m for m, _ in PAIRS} == set(MODELS)
    assert {r for _, r in RUN_PAIRS} == {r for _, r in PAIRS}
    assert len(RUN_PAIRS) <= max(len(MODELS), len(REGIMES)) + 1
    # CI runs every cheap family and every regime, the slow run every costly family
    assert {m for m, _ in CI_RUN_PAIRS} == {m for m in MODELS if not _costly(m)}
    assert {r for _, r in CI_RUN_PAIRS} == {r for _, r in PAIRS}
    assert {m for m, _ in SLOW_RUN_PAIRS} == {m for m in MODELS if _costly(m)}


@settings(FAST, max_examples=60)
@given(valid_experiments(tuple(CI_RUN_PAIRS)))
def test_random_valid_configs_run_and_give_a_complete_table(exp):
    _runs_and_gives_a_complete_table(exp)


@pytest.mark.slow
@settings(FAST, max_examples=12)
@given(valid_experiments(tuple(SLOW_RUN_PAIRS)))
def test_random_valid_neural_configs_run_and_give_a_complete_table(exp):
    _runs_and_gives_a_complete_table(exp)


def _runs_and_gives_a_complete_table(exp):
    r = cj.run_experiment(exp)
    t = r.table
    grid = len(exp.hparam_grid(known_hparams(exp)))
    assert exp.seeds * grid == CHAINS  # one compiled program per (model, regime)
    assert len(t) == CHAINS * GENERATIONS
    keys = ["regime", *r.swept, "seed"]
    per_chain = t.groupby(keys).generation.apply(sorted)
    assert len(per_chain) == CHAINS
    for gens in per_chain:
        assert gens == list(range(GENERATIONS))
    assert t["collapsed"].dtype == bool and t["nonfinite"].dtype == bool
    values = t[list(r.metrics)].to_numpy(np.float64)
    bad_rows = ~np.isfinite(values).all(axis=1)
    assert not (bad_rows & ~t["nonfinite"].to_numpy()).any(), "NaN/inf in a row not flagged"
    assert (t["pool_size"] > 0).all()
    event(f"{exp.model} x {exp.regimes[0]}")
    event(f"nonfinite chains: {int(t.groupby(keys).nonfinite.any().sum())}")
    event(f"collapsed chains: {int(t.groupby(keys).collapsed.any().sum())}")


FIELDS = [f.name for f in dataclasses.fields(Experiment)]

garbage = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.lists(st.integers(-3, 40), max_size=3), st.tuples(st.integers(-3, 40)),
    st.tuples(st.text(max_size=3), st.integers()),
    st.dictionaries(st.text(max_size=6), st.floats(), max_size=2),
    st.dictionaries(st.sampled_from(["sigma", "scale", "unbiased", "lam"]),
                    st.one_of(st.floats(), st.booleans(), st.text(max_size=3)), max_size=2),
)


def _rejects_cleanly(exp: Experiment) -> ConfigError | None:
    """Validate; a ConfigError must be one line; any other exception fails the test."""
    try:
        validate(exp)
    except ConfigError as e:
        assert "\n" not in str(e) and str(e), repr(e)
        return e
    return None


@settings(FAST, max_examples=300)
@given(st.sampled_from(PAIRS), st.sampled_from(FIELDS), garbage)
def test_random_field_values_are_accepted_or_rejected_with_one_line(pair, field, value):
    exp = dataclasses.replace(_base(*pair), **{field: value})
    if _rejects_cleanly(exp) is None:  # accepted: then it is a usable experiment
        assert statics(exp) and all(isinstance(s.n, int) for s in statics(exp))


@FAST
@given(st.sampled_from(PAIRS), st.lists(st.tuples(
    st.sampled_from(["seeds", "n", "d", "regime", "sigma", "hparams.scale", "options.unbiased",
                     "generations", "x64", "n0", "subsample", "lam", "bogus", "hparams.nope"]),
    st.one_of(st.text(alphabet="0123456789.,-eTrueFalsNn'abc()", max_size=8),
              st.integers(-5, 50).map(str))), min_size=1, max_size=3))
def test_random_set_strings_never_traceback(pair, items):
    try:
        exp = cj.override(_base(*pair), [f"{k}={v}" for k, v in items])
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    _rejects_cleanly(exp)


#: Corruptions that always make a valid experiment invalid: (field the message names, change).
CORRUPTIONS = [
    ("seeds", lambda e, v: {"seeds": str(v)}),
    ("seeds", lambda e, v: {"seeds": -v}),
    ("generations", lambda e, v: {"generations": v + 0.5}),
    ("n", lambda e, v: {"n": -v}),
    ("n", lambda e, v: {"n": float(e.n) + 0.5}),
    ("d", lambda e, v: {"d": 0}),
    ("n_test", lambda e, v: {"n_test": str(v)}),
    ("regimes", lambda e, v: {"regimes": e.regimes[0]}),
    ("regime", lambda e, v: {"regimes": (e.regimes[0] + "x" * (v % 3 + 1),)}),
    ("model", lambda e, v: {"model": e.model + "_"}),
    ("root_seed", lambda e, v: {"root_seed": -v}),
    ("x64", lambda e, v: {"x64": v}),
    ("hparams.", lambda e, v: {"hparams": {"zz" + "q" * (v % 4): 1.0}}),
    ("hparams.", lambda e, v: {"hparams": {next(iter(known_hparams(e))): math.nan}}),
    ("hparams.", lambda e, v: {"hparams": {next(iter(known_hparams(e))): -1e39 * v}}),
    ("hparams.", lambda e, v: {"hparams": {next(iter(known_hparams(e))): ()}}),
    ("options", lambda e, v: {"options": {"not_an_option": v}}),
    ("subsample", lambda e, v: {"subsample": v} if "accumulate_subsample" not in e.regimes
     else {"subsample": 10**9}),
]


@FAST
@given(st.sampled_from(PAIRS), st.sampled_from(range(len(CORRUPTIONS))), st.integers(1, 10**6))
def test_targeted_corruptions_are_always_rejected_naming_the_field(pair, which, v):
    field, change = CORRUPTIONS[which]
    base = _base(*pair)
    if field == "hparams." and "zz" not in str(change(base, v)) and not known_hparams(base):
        assume(False)  # a model without hyperparameters
    exp = dataclasses.replace(base, **change(base, v))
    err = _rejects_cleanly(exp)
    assert err is not None, f"accepted {change(base, v)}"
    assert field in str(err), str(err)


if __name__ == "__main__":  # the closing note: every bad experiment and the message it produced
    spec = dataclasses.replace(cj.MODELS["gaussian"], name="_float32_only", float64=False)
    cj.MODELS["_float32_only"] = spec
    for _name, base, changes, _ in BAD_EXPERIMENTS:
        try:
            validate(dataclasses.replace(base, **changes))
            print(f"| {_name} | ACCEPTED |")
        except ConfigError as e:
            print(f"| `{base.model}` {changes} | {e} |")
