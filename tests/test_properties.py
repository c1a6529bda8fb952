"""Property tests over the configuration space (hypothesis).

- Valid side: random valid experiments (every registered model and every regime, via a small
  cover of (model, regime) pairs; the model's ``example`` sizes; random hyperparameters over their
  whole declared range; random seeds and sweeps) run end to end and give a complete table: every
  chain x generation row, no NaN/inf except in rows flagged ``nonfinite``. Compiles are shared:
  one static shape per pair and exactly ``CHAINS`` chains (seeds x hyperparameter grid) in every
  example, so after the first example of a pair only hyperparameter values, seeds and the root
  key change, which never recompiles.
- Invalid side (validation only, nothing compiles): random corruptions of valid experiments and
  random ``--set`` strings are rejected with a one-line ``ConfigError`` (never another exception),
  and targeted corruptions always are, naming the field.

About 1000 examples in all; derandomized so CI time and outcomes are stable.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import collapse_jax as cj
from collapse_jax.config import ConfigError, Experiment
from collapse_jax.validate import experiment_hparam_range, known_hparams, statics, validate

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
def valid_experiments(draw):
    model, regime = draw(st.sampled_from(RUN_PAIRS))
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


@settings(FAST, max_examples=60)
@given(valid_experiments())
def test_random_valid_configs_run_and_give_a_complete_table(exp):
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


# ----------------------------------------------------------------------------------------------
# Invalid side: validation only

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
