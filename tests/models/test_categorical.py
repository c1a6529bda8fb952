"""The categorical family (``collapse_jax.models.categorical``): a temperature below one collapses
faster; one outcome left is absorbing, with finite metrics and the ``collapsed`` flag.
"""

from __future__ import annotations

import jax
import numpy as np

import collapse_jax as cj
from collapse_jax import MODELS, StaticConfig, run_sweep
from collapse_jax.results import flag_counts
from collapse_jax.validate import statics


def _sweep(static, hp, chains, root=0):
    spec = MODELS[static.model]
    values = {**spec.hparams, **hp}
    full = {k: np.broadcast_to(np.asarray(v, np.float32), (chains,)) for k, v in values.items()}
    return run_sweep(static, jax.random.key(root), np.arange(chains), full, {})


def test_categorical_temperature_below_one_collapses_faster():
    static = StaticConfig(model="categorical", regime="replace", n0=20, n=20, d=5,
                          generations=15, n_test=4)
    chains = 400
    hp = {"temperature": np.repeat(np.float32([0.5, 1.0]), chains)}
    res = _sweep(static, hp, 2 * chains)
    cold, warm = res.metrics["collision"][:chains], res.metrics["collision"][chains:]
    diff = cold[:, -1] - warm[:, -1]
    assert diff.mean() > 4 * diff.std(ddof=1) / np.sqrt(chains)


def _run(**kw):
    exp = cj.Experiment(name="degenerate", **{"n_test": 16, **kw})
    r = cj.run_experiment(exp)
    t = r.table
    assert len(t) == len(statics(exp)) * exp.seeds * len(
        exp.hparam_grid(cj.MODELS[exp.model].hparams)) * exp.generations
    assert t["collapsed"].dtype == bool and t["nonfinite"].dtype == bool
    return r, t


def test_categorical_one_outcome_left_is_absorbing_and_finite():
    # K = 3 outcomes, n = 4 samples per generation under replace: every chain fixates on one
    # outcome (Wright-Fisher absorption, ~2 n generations on average) and stays there.
    r, t = _run(model="categorical", regimes=("replace",), seeds=8, generations=40, n=4, d=3)
    cols = ["entropy", "collision", "survivors", "tv", "missing_mass"]
    assert np.isfinite(t[cols].to_numpy()).all() and not t["nonfinite"].any()
    np.testing.assert_array_equal(t["collapsed"], t["survivors"] == 1)
    for _, chain in t.groupby("seed"):
        flags = chain.sort_values("generation")["collapsed"].to_numpy()
        first = np.argmax(flags) if flags.any() else len(flags)
        assert flags[first:].all(), "one outcome left must be absorbing"
    last = t[t.generation == 39]
    assert last["collapsed"].all()
    np.testing.assert_allclose(last["entropy"], 0.0, atol=1e-7)
    np.testing.assert_allclose(last["collision"], 1.0, rtol=1e-6)
    assert flag_counts(t)["collapsed"] == 8
