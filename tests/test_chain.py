"""The generation loop (``collapse_jax.chain``): ``advance`` takes its generation bounds as traced
values, so one compiled program runs every chunk of generations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import collapse_jax as cj
from collapse_jax import chain as C
from collapse_jax.config import ConfigError
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


def test_advance_compiles_once_across_chunks():
    static = _example_static("gaussian", "accumulate")
    chain = cj.make_chain(static)
    hp = _hparams("gaussian")
    key = jax.random.key(0)
    real = C.draw_real(chain, key, hp, {})
    state, _ = C.init(chain, key, hp, real)
    adv = jax.jit(lambda s, g0, k, h, r: C.advance(chain, s, g0, g0 + 1, 1, k, h, r))
    for g in (1, 2):
        state, _ = adv(state, jnp.int32(g), key, hp, real)
    assert adv._cache_size() == 1
