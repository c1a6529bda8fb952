"""Contract tests over the registries: every registered model, with every regime it accepts,
runs as a jitted, vmapped chain with stable shapes and dtypes, finite metrics, and no recompile
when only values change. A new family is covered by registering it (with ``example`` sizes)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import collapse_jax as cj
from collapse_jax import chain as C
from collapse_jax.config import ConfigError
from collapse_jax.programs import reference_program as compiled_sweep_fn
from collapse_jax.validate import statics

GENERATIONS = 3


def _example_static(model: str, regime: str) -> cj.StaticConfig:
    spec = cj.MODELS[model]
    ex = dict(spec.example)
    options = ex.pop("options", {})
    exp = cj.Experiment(name="contract", model=model, regimes=(regime,), seeds=2,
                        generations=GENERATIONS, options=options, **ex)
    try:
        cj.validate(exp)
    except ConfigError as e:  # the regime does not apply to this model/source
        pytest.skip(f"{model} x {regime}: {e}")
    return statics(exp)[0]


def _hparams(model: str, bump: float = 0.0) -> dict:
    from collapse_jax.config import hparams_from

    defaults = dict(cj.MODELS[model].hparams)
    try:  # regime hyperparameters, where the registry has them
        from collapse_jax.regimes import REGIME_HPARAMS
    except ImportError:
        REGIME_HPARAMS = {}
    for hp in REGIME_HPARAMS.values():
        defaults.update(hp)
    return hparams_from({k: v * (1.0 + bump) for k, v in defaults.items()})


# every regime, or the representative ones a costly family names (``example_regimes``)
CASES = [(m, r) for m in sorted(cj.MODELS)
         for r in (cj.MODELS[m].example_regimes or tuple(cj.REGIMES))]


def _compiled_case(model: str, regime: str):
    """A case of the compiled sweep: a costly family (one naming ``example_regimes``) compiles
    under its first example regime in CI and under the others with ``pytest -m slow`` (each of
    its compiles takes 10-25 s on 2 cores; tracing checks every regime in CI)."""
    regimes = cj.MODELS[model].example_regimes
    marks = [pytest.mark.slow] if regimes and regime != regimes[0] else []
    return pytest.param((model, regime), marks=marks, id=f"{model}-{regime}")


def _with_static(pair):
    model, regime = pair
    return model, regime, _example_static(model, regime)


@pytest.fixture(params=CASES, ids=[f"{m}-{r}" for m, r in CASES])
def case(request):
    return _with_static(request.param)


@pytest.fixture(params=[_compiled_case(m, r) for m, r in CASES])
def compiled_case(request):
    return _with_static(request.param)


def _signature(tree):
    return jax.tree.map(lambda a: (a.shape, jnp.dtype(a.dtype), getattr(a, "weak_type", False)),
                        tree)


def test_chain_state_is_stable(case):
    """Generation 0 and a later generation give the same state structure, shapes and dtypes (no
    weak types) and the same float32 scalar metrics (traced with ``jax.eval_shape``: shapes and
    dtypes are decided at trace time, so nothing needs compiling; the values are checked by
    ``test_sweep_runs_finite_and_compiles_once``)."""
    model, _, static = case
    chain = cj.make_chain(static)
    args = chain.source.load(static)
    hp = _hparams(model)
    key = jax.random.key(3)
    real = jax.eval_shape(lambda k, h, a: C.draw_real(chain, k, h, a), key, hp, args)
    state0, m0 = jax.eval_shape(lambda k, h, r: C.init(chain, k, h, r), key, hp, real)
    state1, m1 = jax.eval_shape(lambda s, g, k, h, r: C.step(chain, s, g, k, h, r, args),
                                state0, jnp.int32(1), key, hp, real)
    assert _signature(state0) == _signature(state1)
    assert not any(getattr(a, "weak_type", False) for a in jax.tree.leaves((state0, state1)))
    assert set(m0) == set(m1)
    assert set(cj.MODELS[model].metrics) <= set(m0)
    for name, v in {**m0, **m1}.items():
        assert v.shape == () and v.dtype == jnp.float32, name


def test_sweep_runs_finite_and_compiles_once(compiled_case):
    """Two chains run as one jitted, vmapped sweep: every metric of every generation is finite,
    and new hyperparameter values, chain ids and root key reuse the compiled program."""
    model, _, static = compiled_case
    fn = compiled_sweep_fn.__wrapped__(static)  # a fresh jit: its compile cache starts empty
    args = cj.make_chain(static).source.load(static)
    hp = {k: jnp.full((2,), v, jnp.float32) for k, v in _hparams(model).items()}
    _, metrics = fn(jax.random.key(0), jnp.arange(2, dtype=jnp.int32), hp, args)
    assert fn._cache_size() == 1
    assert set(cj.MODELS[model].metrics) <= set(metrics)
    for name, v in metrics.items():
        assert v.shape == (2, GENERATIONS), name
        assert bool(jnp.all(jnp.isfinite(v))), f"{name} not finite: {v}"
    hp2 = {k: jnp.full((2,), v, jnp.float32) for k, v in _hparams(model, bump=0.1).items()}
    out2 = fn(jax.random.key(5), jnp.arange(7, 9, dtype=jnp.int32), hp2, args)
    assert fn._cache_size() == 1, "new hyperparameter values or seeds recompiled the sweep"
    assert jax.tree.structure(metrics) == jax.tree.structure(out2[1])
    assert bool(jnp.all(jnp.isfinite(out2[1][next(iter(metrics))])))
