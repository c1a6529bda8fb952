"""The shared SGD fit loop: masking, budgets, init modes, vmap equivalence, no recompiles."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from collapse_jax.config import ConfigError
from collapse_jax.fitting import FitConfig, effective_steps, make_sgd_fit, max_steps
from collapse_jax.pool import Pool, init_pool

D = 3


def _lsq_loss(params, batch, key, hparams):
    """Least squares of a linear model on rows ``[x (D) | y]``; ``key`` unused."""
    del key, hparams
    x, y = batch[:, :D], batch[:, D]
    return jnp.mean((x @ params["w"] - y) ** 2)


def _init(key):
    return {"w": jax.random.normal(key, (D,), jnp.float32)}


def _regression_pool(key, n, capacity) -> Pool:
    kx, kn = jax.random.split(key)
    x = jax.random.normal(kx, (n, D), jnp.float32)
    y = x @ jnp.array([1.0, -2.0, 0.5], jnp.float32) + 0.1 * jax.random.normal(kn, (n,))
    return init_pool(jnp.concatenate([x, y[:, None]], axis=1), capacity)


def _hp(lr):
    return {"lr": jnp.float32(lr)}


def test_fit_decreases_loss_on_fixed_pool():
    pool = _regression_pool(jax.random.key(1), 64, 80)
    fit = jax.jit(make_sgd_fit(FitConfig(batch=16, steps=200), _lsq_loss, _init))
    params, info = fit(jax.random.key(2), pool, _init(jax.random.key(3)), _hp(0.05))
    before = _lsq_loss(_init(jax.random.key(3)), pool.data[:64], None, None)
    after = _lsq_loss(params, pool.data[:64], None, None)
    # The noise floor is 0.01; a fresh random w has a loss of order |w - w*|^2 ~ 8.
    assert float(after) < 0.05 < float(before)
    losses = np.asarray(info.losses)
    assert losses[-20:].mean() < 0.05 * losses[:20].mean()
    assert int(info.effective_steps) == 200 and float(info.wasted_step_fraction) == 0.0


@pytest.mark.parametrize("budget", ["steps", "epochs"])
def test_invalid_slots_never_touched(budget):
    """Poisoning invalid slots (non-prefix mask) with a huge finite value changes nothing."""
    pool = _regression_pool(jax.random.key(4), 40, 40)
    valid = jax.random.bernoulli(jax.random.key(5), 0.6, (40,))
    clean = pool._replace(
        valid=valid, count=jnp.sum(valid, dtype=jnp.int32),
        data=jnp.where(valid[:, None], pool.data, 0.0),
    )
    poisoned = clean._replace(data=jnp.where(valid[:, None], pool.data, 1e30))
    cfg = FitConfig(batch=8, steps=30, budget=budget, epochs=2.0)
    fit = jax.jit(make_sgd_fit(cfg, _lsq_loss, _init))
    p0 = _init(jax.random.key(6))
    a, ia = fit(jax.random.key(7), clean, p0, _hp(0.05))
    b, ib = fit(jax.random.key(7), poisoned, p0, _hp(0.05))
    np.testing.assert_array_equal(np.asarray(a["w"]), np.asarray(b["w"]))
    np.testing.assert_array_equal(np.asarray(ia.losses), np.asarray(ib.losses))
    assert np.all(np.isfinite(np.asarray(ib.losses)))


def test_vmapped_chains_equal_separate_runs():
    """K chains in one vmapped fit equal K separate fits (float32 tolerance 1e-5 relative)."""
    k = 5
    pools = jax.vmap(lambda key: _regression_pool(key, 30, 50))(
        jax.random.split(jax.random.key(8), k))
    keys = lambda: jax.random.split(jax.random.key(9), k)  # fresh copies: keys are consumed
    lrs = jnp.linspace(0.01, 0.1, k, dtype=jnp.float32)
    p0 = jax.vmap(_init)(jax.random.split(jax.random.key(10), k))
    fit = make_sgd_fit(FitConfig(batch=8, steps=40, init_mode="warm"), _lsq_loss, _init)
    batched, _ = jax.jit(jax.vmap(fit))(keys(), pools, p0, {"lr": lrs})
    single = jax.jit(fit)
    for i in range(k):
        one, _ = single(keys()[i], jax.tree.map(lambda x, i=i: x[i], pools),
                        {"w": p0["w"][i]}, {"lr": lrs[i]})
        np.testing.assert_allclose(np.asarray(batched["w"][i]), np.asarray(one["w"]),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("count,batch,epochs", [(37, 8, 2.0), (64, 16, 1.0), (5, 8, 1.0),
                                                (50, 7, 0.5), (80, 8, 3.0)])
def test_epoch_mode_runs_the_right_number_of_updates(count, batch, epochs):
    """Plain SGD on a loss with constant gradient: w moves by exactly lr x (effective steps)."""
    capacity = 80
    data = jnp.zeros((capacity, 1), jnp.float32)
    pool = init_pool(data[:count], capacity)
    loss = lambda p, b, k, h: jnp.sum(p["w"]) + 0.0 * jnp.sum(b)
    cfg = FitConfig(batch=batch, budget="epochs", epochs=epochs, optimizer="sgd",
                    init_mode="warm")
    fit = jax.jit(make_sgd_fit(cfg, loss, lambda k: {"w": jnp.zeros((1,), jnp.float32)}))
    params, info = fit(jax.random.key(0), pool, {"w": jnp.zeros((1,), jnp.float32)},
                       _hp(0.25))
    expected = math.ceil(epochs * count / batch)
    total = math.ceil(epochs * capacity / batch)
    assert max_steps(cfg, capacity) == total
    assert int(info.effective_steps) == expected
    assert int(np.sum(np.asarray(info.active))) == expected
    assert float(params["w"][0]) == pytest.approx(-0.25 * expected, rel=1e-6)
    assert float(info.wasted_step_fraction) == pytest.approx(1 - expected / total, rel=1e-6)


def test_effective_steps_integer_arithmetic():
    cfg = FitConfig(batch=10, budget="epochs", epochs=0.1)
    # 0.1 * 100 / 10 = 1 exactly: float arithmetic would give ceil(1.0000000000000002) = 2.
    assert int(effective_steps(cfg, jnp.int32(100), 1000)) == 1


def test_reinit_ignores_incoming_params_warm_uses_them():
    pool = _regression_pool(jax.random.key(11), 32, 32)
    p_a, p_b = _init(jax.random.key(12)), _init(jax.random.key(13))
    for mode, same in (("reinit", True), ("warm", False)):
        fit = jax.jit(make_sgd_fit(FitConfig(batch=8, steps=3, init_mode=mode), _lsq_loss,
                                   _init))
        a, _ = fit(jax.random.key(14), pool, p_a, _hp(0.01))
        b, _ = fit(jax.random.key(14), pool, p_b, _hp(0.01))
        assert np.array_equal(np.asarray(a["w"]), np.asarray(b["w"])) == same, mode


def test_no_recompile_across_generations_and_lr():
    """One compile serves pools of any count (generations) and any learning rate."""
    cfg = FitConfig(batch=8, budget="epochs", epochs=1.0)
    fit = jax.jit(make_sgd_fit(cfg, _lsq_loss, _init))
    p0 = _init(jax.random.key(15))
    for g, (n, lr) in enumerate([(10, 0.1), (30, 0.01), (60, 0.3)]):
        pool = _regression_pool(jax.random.key(16 + g), n, 60)
        fit(jax.random.fold_in(jax.random.key(20), g), pool, p0, _hp(lr))
    assert fit._cache_size() == 1


@pytest.mark.parametrize("field,value", [("init_mode", "cold"), ("budget", "time"),
                                         ("batch", 0), ("epochs", -1.0), ("steps", 2.5)])
def test_bad_fit_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        make_sgd_fit(FitConfig(**{field: value}), _lsq_loss, _init)


def test_schedule_warmup_cosine_and_adamw_clip():
    """Warm-up + cosine reaches min_lr_ratio * lr at the last effective step; AdamW with a clip
    still fits; the constant schedule leaves the learning rate untouched (bit for bit)."""
    from collapse_jax.fitting import learning_rate

    cfg = FitConfig(warmup=3, schedule="cosine", min_lr_ratio=0.1, steps=10)
    lrs = [float(learning_rate(cfg, jnp.float32(2.0), jnp.int32(i), jnp.int32(10)))
           for i in range(10)]
    np.testing.assert_allclose(lrs[:3], [2 / 3, 4 / 3, 2.0], rtol=1e-6)
    assert lrs[-1] == pytest.approx(0.2, rel=1e-6)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))  # decays monotonically
    const = FitConfig()
    assert learning_rate(const, jnp.float32(0.3), jnp.int32(5), jnp.int32(9)) is not None
    assert float(learning_rate(const, jnp.float32(0.3), jnp.int32(5), jnp.int32(9))) == \
        np.float32(0.3)
    pool = _regression_pool(jax.random.key(11), 64, 64)
    cfg = FitConfig(batch=16, steps=300, optimizer="adamw", weight_decay=1e-4, warmup=20,
                    schedule="cosine", clip_norm=1.0)
    params, info = jax.jit(make_sgd_fit(cfg, _lsq_loss, _init))(
        jax.random.key(12), pool, _init(jax.random.key(13)), _hp(0.05))
    assert float(_lsq_loss(params, pool.data, None, None)) < 0.05


@pytest.mark.parametrize("field,value", [("optimizer", "lion"), ("schedule", "linear"),
                                         ("warmup", -1), ("min_lr_ratio", 2.0),
                                         ("clip_norm", -1.0)])
def test_bad_schedule_settings_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        make_sgd_fit(FitConfig(**{field: value}), _lsq_loss, _init)
