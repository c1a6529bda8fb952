"""The VAE family (``collapse_jax.models.vae``): contract shapes, training helps, masking of
budgets, vmap = separate runs; a non-finite loss is flagged and the chain keeps running.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import collapse_jax as cj
from collapse_jax import Experiment, StaticConfig, make_chain, run_chain, validate
from collapse_jax.chain import draw_real
from collapse_jax.config import ConfigError
from collapse_jax.model import MODELS, make_model
from collapse_jax.models.vae import class_metrics, mmd2
from collapse_jax.sweep import run_sweep
from collapse_jax.validate import statics

TINY = {"hidden": 16, "latent": 2, "steps": 20, "batch": 8, "eval_samples": 16}


def _static(regime="accumulate", generations=3, **options):
    opts = {**TINY, **options}
    return StaticConfig(model="vae", regime=regime, n0=24, n=24, d=64, generations=generations,
                        n_test=32, options=tuple(sorted(opts.items())))


def _args(static):
    return make_chain(static).source.load(static)


def _hp(lr=3e-3):
    return {"lr": jnp.float32(lr)}


def test_registered_with_metrics_and_example():
    spec = MODELS["vae"]
    assert spec.source == "digits" and "lr" in spec.hparams
    assert {"neg_elbo", "recon", "kl", "label_entropy", "mmd"} <= set(spec.metrics)
    assert spec.example["d"] == 64


@pytest.fixture(scope="module")
def runs():
    """One static config (accumulate, 30-epoch budget, warm start), run two ways.

    Capacity 24 + 2 * 24 = 72, batch 8, 30 epochs: 270 scan steps; generation g applies
    90 (g + 1). Compiles twice in all (the 3-chain sweep and the single-chain program); every
    test below reuses these runs (compiles dominate the cost on CPU).
    """
    static = _static(budget="epochs", epochs=30, init_mode="warm")
    args = _args(static)
    lrs = np.array([1e-3, 3e-3, 1e-2], np.float32)
    sweep = run_sweep(static, jax.random.key(10), [0, 1, 2], {"lr": lrs}, args)
    chain = make_chain(static)
    single = jax.jit(lambda k, h, a: run_chain(chain, k, h, a))
    singles = [single(jax.random.fold_in(jax.random.key(10), i), _hp(lrs[i]), args)
               for i in range(3)]
    return {"static": static, "args": args, "sweep": sweep, "single": single,
            "singles": singles, "chain": chain}


def test_vmapped_chains_equal_separate_chains(runs):
    """A sweep of K = 3 chains (one vmapped program, distinct lr) equals 3 single-chain runs.

    Tolerance: relative 1e-4 on every metric (float32; batched matmuls may sum in another order
    and hundreds of Adam steps over 3 generations amplify last-bit differences).
    """
    for i, (_, m) in enumerate(runs["singles"]):
        for name in ("neg_elbo", "recon", "kl", "train_loss", "mmd"):
            np.testing.assert_allclose(runs["sweep"].metrics[name][i], np.asarray(m[name]),
                                       rtol=1e-4, err_msg=name)


def test_no_recompile_across_lr_and_seeds(runs):
    assert runs["single"]._cache_size() == 1


def test_metrics_finite_and_params_float32(runs):
    state, metrics = runs["singles"][0]
    assert set(MODELS["vae"].metrics) <= set(metrics)
    for name, v in metrics.items():
        assert v.shape == (3,) and v.dtype == jnp.float32, name
        assert np.all(np.isfinite(np.asarray(v))), name
    for leaf in jax.tree.leaves(state.params):
        assert leaf.dtype == jnp.float32


def test_init_and_fit_params_match_exactly():
    """Same structure, shapes, dtypes and weak types before and after a fit (traced only)."""
    static = _static()
    model = make_model(static)
    real = jax.eval_shape(lambda: draw_real(make_chain(static), jax.random.key(0), _hp(),
                                            _args(static)))
    p0 = jax.eval_shape(model.init, jax.random.key(1), real, _hp())
    pool = jax.eval_shape(make_chain(static).regime.init, real.train)
    p1 = jax.eval_shape(model.fit, jax.random.key(2), pool, p0, _hp())
    spec = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype, x.weak_type), t)
    assert jax.tree.structure(p0) == jax.tree.structure(p1) and spec(p0) == spec(p1)


def test_epoch_budget_reports_wasted_steps_under_accumulate(runs):
    m = runs["sweep"].metrics
    np.testing.assert_allclose(m["wasted_step_fraction"], np.tile([2 / 3, 1 / 3, 0.0], (3, 1)),
                               rtol=1e-6)
    np.testing.assert_allclose(m["pool_size"], np.tile([24, 48, 72], (3, 1)))


def test_training_beats_the_constant_decoder(runs):
    """Held-out neg ELBO at generation 0 (90 Adam steps on 24 images) beats, by more than 5%,
    the trivial model whose decoder outputs 0.5 for every pixel (64 log 2 = 44.4 nats; KL 0)."""
    gen0 = runs["sweep"].metrics["neg_elbo"][:, 0]
    assert np.all(gen0 < 0.95 * 64 * np.log(2.0)), gen0


def test_samples_are_images(runs):
    state, _ = runs["singles"][1]
    static = runs["static"]
    real = draw_real(runs["chain"], jax.random.key(4), _hp(), runs["args"])
    x = make_model(static).sample(jax.random.key(7), state.params, real, _hp(), 10)
    assert x.shape == (10, 64) and x.dtype == jnp.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    bern = make_model(dataclasses.replace(
        static, options=tuple(sorted({**dict(static.options), "pixel_sample": "bernoulli"}
                                     .items()))))
    xb = np.asarray(bern.sample(jax.random.key(8), state.params, real, _hp(), 10))
    assert set(np.unique(xb).tolist()) <= {0.0, 1.0}


def test_bad_sizes_and_options_are_config_errors():
    with pytest.raises(ConfigError, match="d=10"):
        validate(Experiment(name="x", model="vae", d=10))
    with pytest.raises(ConfigError, match="init_mode"):
        validate(Experiment(name="x", model="vae", d=64, options={"init_mode": "cold"}))
    with pytest.raises(ConfigError, match="source"):
        validate(dataclasses.replace(Experiment(name="x", model="vae", d=64), source="gaussian"))


def test_class_metrics_and_mmd_detect_collapse():
    one_class = jnp.tile(jax.nn.one_hot(jnp.int32(3), 10, dtype=jnp.float32)[None, :], (20, 1))
    m = class_metrics(one_class)
    assert float(m["label_entropy"]) == pytest.approx(0.0, abs=1e-6)
    assert float(m["class_coverage"]) == pytest.approx(0.1)
    y = jax.random.uniform(jax.random.key(11), (50, 8))
    assert float(mmd2(y[:25], y[25:])) < float(mmd2(jnp.full((25, 8), 0.5), y))


def test_snapshots_are_kept_by_the_sweep_and_drawn(runs, tmp_path):
    """A sweep that keeps samples of its first chain at a few generations stops its chunks there
    and gives the very metrics of one that does not; the samples are images; the family's
    renderer draws them; a negative sample count is refused."""
    lrs = np.array([1e-3, 3e-3, 1e-2], np.float32)
    snap = run_sweep(runs["static"], jax.random.key(10), [0, 1, 2], {"lr": lrs}, runs["args"],
                     snapshot=4)
    assert sorted(snap.samples) == [0, 1, 2]  # snapshot_generations(3)
    for g, images in snap.samples.items():
        assert images.shape == (4, 64) and 0.0 <= images.min() <= images.max() <= 1.0, g
    for name in ("neg_elbo", "kl", "pool_size"):
        np.testing.assert_array_equal(snap.metrics[name], runs["sweep"].metrics[name],
                                      err_msg=name)
    png, = MODELS["vae"].render({"accumulate": snap.samples, "again": snap.samples},
                                runs["static"], tmp_path)
    assert png.name == "samples.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="snapshots=-1"):
        validate(Experiment(name="v", model="vae", snapshots=-1))


@pytest.mark.slow
def test_vae_digits_reproduction():
    """configs/vae_digits.py: held-out neg ELBO rises under replace, and under accumulate stays
    within 10% of generation 0 (Gerstgrasser et al.'s VAE result at CPU scale; minutes)."""
    import importlib.util
    from pathlib import Path

    from collapse_jax import run_experiment

    path = Path(__file__).resolve().parents[1] / "configs" / "vae_digits.py"
    spec = importlib.util.spec_from_file_location("vae_digits", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    t = run_experiment(mod.get_config()).table
    curve = t.groupby(["regime", "generation"])["neg_elbo"].mean()
    last = t["generation"].max()
    rep, acc = curve["replace"], curve["accumulate"]
    # per-seed rise under replace, with the seed-to-seed spread as the yardstick
    rise = (t[(t.regime == "replace") & (t.generation == last)]["neg_elbo"].to_numpy()
            - t[(t.regime == "replace") & (t.generation == 0)]["neg_elbo"].to_numpy())
    assert rise.mean() > 4 * rise.std(ddof=1) / np.sqrt(rise.size), rise
    assert rep[last] > acc[last]
    assert abs(acc[last] / acc[0] - 1.0) < 0.10


# ----------------------------------------------------------------------------------------------
# degenerate chains


def _run(**kw):
    exp = cj.Experiment(name="degenerate", **{"n_test": 16, **kw})
    r = cj.run_experiment(exp)
    t = r.table
    assert len(t) == len(statics(exp)) * exp.seeds * len(
        exp.hparam_grid(cj.MODELS[exp.model].hparams)) * exp.generations
    assert t["collapsed"].dtype == bool and t["nonfinite"].dtype == bool
    return r, t


def test_vae_nonfinite_loss_is_flagged_and_the_chain_keeps_running():
    # lr = 1e30: Adam's first step throws the weights to ~1e30 and the loss overflows to inf/NaN.
    # The sizes match tests/test_validate.py (one compiled program for both).
    ex = dict(cj.MODELS["vae"].example)
    options = ex.pop("options", {})
    r, t = _run(model="vae", regimes=("accumulate_subsample",), seeds=2, generations=3,
                options=options, hparams={"lr": (1e-3, 1e30)}, chunk_size=4, **ex)
    bad, good = t[t.lr > 1], t[t.lr < 1]
    assert bad.groupby("seed")["nonfinite"].any().all()
    assert not good["nonfinite"].any()
    assert np.isfinite(good[list(r.metrics)].to_numpy(np.float64)).all()
