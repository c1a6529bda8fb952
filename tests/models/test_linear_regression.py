"""The linear regression family (``collapse_jax.models.linear_regression``): the summed-statistics
fast path equals the pool of rows and stays small; the fit matches a float64 reference per dtype
and the noiseless closed form holds to rounding; rank-deficient designs give the minimum-norm fit
and the ``collapsed`` flag, and overflow is flagged ``nonfinite``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import XLA_DEFAULT_LEVEL

import collapse_jax as cj
from collapse_jax import StaticConfig
from collapse_jax import chain as C
from collapse_jax.config import hparams_from
from collapse_jax.pool import init_pool
from collapse_jax.results import flag_counts
from collapse_jax.validate import statics


@pytest.mark.parametrize("regime", ["replace", "accumulate"])
def test_linear_regression_fast_path_equals_row_pool(regime):
    """Same keys, same labels: the pool of ``X^T X`` and ``X^T y`` sums gives the row pool's
    metrics, bit for bit under ``replace`` (one block: the same products) and to 1e-4 relative
    under ``accumulate`` (the sums are added in another order; 2e-5 measured), over 30
    generations of 16 chains (whole chains in one program: ``compiled_sweep_fn``); the pool
    reports the same size and real fraction. Compiled at XLA's default code generation
    (``XLA_DEFAULT_LEVEL``): the bitwise claim is about that code."""
    from collapse_jax.programs import reference_program as compiled_sweep_fn

    out = {}
    for fast in (True, False):
        static = StaticConfig(model="linear_regression", regime=regime, n0=50, n=50, d=8,
                              generations=30, n_test=40, options=(("fast_path", fast),))
        hp = {"sigma": jnp.ones((16,), jnp.float32), "noise_ratio": jnp.ones((16,), jnp.float32)}
        args = (jax.random.key(0), jnp.arange(16), hp, {})
        _, out[fast] = compiled_sweep_fn(static).lower(*args).compile(XLA_DEFAULT_LEVEL)(*args)
    assert set(out[True]) == set(out[False])
    for k in out[True]:
        fast, rows = np.asarray(out[True][k]), np.asarray(out[False][k])
        if regime == "replace":
            np.testing.assert_array_equal(fast, rows, err_msg=k)
        else:
            np.testing.assert_allclose(fast, rows, rtol=1e-4, atol=1e-6, err_msg=k)
    assert np.asarray(out[True]["pool_size"])[0, -1] == (50 if regime == "replace" else 50 * 30)


def test_linear_regression_fast_path_pool_stays_small():
    """The fast path's state does not grow with the generations (the row pool's does)."""
    from collapse_jax.plan import bytes_per_chain

    def size(fast, gens):
        return bytes_per_chain(StaticConfig(model="linear_regression", regime="accumulate",
                                            n0=100, n=100, d=8, generations=gens, n_test=10,
                                            options=(("fast_path", fast),)), {})

    assert size(True, 10) == size(True, 1000)
    assert size(False, 1000) > 10 * size(False, 10)


# Relative tolerances of a generation-0 fit against a float64 numpy reference on the same data:
# a few hundred ulps of the dtype (sums over n points, an eigendecomposition for OLS).
RTOL = {"float32": 2e-5, "float64": 1e-12}
# Noiseless OLS (sigma = 0) recovers w* up to rounding: |w_hat - w*|^2 ~ (cond^2 eps)^2 |w*|^2.
# Measured over 64 chains x 6 generations (T = 40, d = 4): max 1.0e-10 (float32), 3.9e-28
# (float64); the bounds leave two and four orders of margin.
NOISELESS_ERROR = {"float32": 1e-8, "float64": 1e-24}

DTYPES = ["float32", "float64"]


def _x64(dtype: str):
    return jax.enable_x64(dtype == "float64")


def _chain_g0(model: str, dtype: str, **sizes):
    static = cj.StaticConfig(model=model, regime="replace", generations=2, dtype=dtype, **sizes)
    chain = cj.make_chain(static)
    hp = hparams_from(cj.MODELS[model].hparams, dtype=jnp.dtype(dtype))

    @jax.jit
    def g0(key, hp):
        real = C.draw_real(chain, key, hp, {})
        state, metrics = C.init(chain, key, hp, real)
        return real, state.params, metrics

    return g0(jax.random.key(7), hp)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linreg_fit_matches_float64_reference(dtype):
    with _x64(dtype):
        real, params, metrics = _chain_g0("linear_regression", dtype, n0=40, n=40, d=5,
                                          n_test=20)
        x = np.asarray(real.train["x"], np.float64)
        y = np.asarray(real.train["y"], np.float64)
        w, w_star = np.asarray(params["w"]), np.asarray(real.truth["w"], np.float64)
        test_error = float(metrics["test_error"])
    ref = np.linalg.lstsq(x, y, rcond=None)[0]
    cond2 = np.linalg.cond(x) ** 2  # the normal equations square the condition number
    np.testing.assert_allclose(w, ref, rtol=RTOL[dtype] * cond2, atol=RTOL[dtype] * cond2)
    np.testing.assert_allclose(test_error, np.sum((ref - w_star) ** 2), rtol=RTOL[dtype] * cond2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_noiseless_linreg_closed_form_per_dtype(dtype):
    """sigma = 0: the closed form u (g + 1) is 0 at every generation; rounding is all we see."""
    exp = cj.Experiment(name="noiseless", model="linear_regression", regimes=("replace",),
                        seeds=4, generations=6, n=40, d=4, n_test=8, hparams={"sigma": 0.0},
                        x64=dtype == "float64")
    t = cj.run_experiment(exp).table
    assert t["test_error"].dtype == np.dtype(dtype)
    assert not t["nonfinite"].any()
    assert (t["test_error"] < NOISELESS_ERROR[dtype]).all(), t["test_error"].max()


# ----------------------------------------------------------------------------------------------
# degenerate chains


METRIC_COLUMNS = {
    "gaussian": ["trace_ratio", "logdet_ratio", "mean_error", "w2", "nll", "pool_size"],
    "linear_regression": ["test_error", "test_mse", "pool_size"],
}


def _run(**kw):
    exp = cj.Experiment(name="degenerate", **{"n_test": 16, **kw})
    r = cj.run_experiment(exp)
    t = r.table
    assert len(t) == len(statics(exp)) * exp.seeds * len(
        exp.hparam_grid(cj.MODELS[exp.model].hparams)) * exp.generations
    assert t["collapsed"].dtype == bool and t["nonfinite"].dtype == bool
    return r, t


def _linreg_model_and_pool(x, y, capacity):
    static = cj.StaticConfig(model="linear_regression", regime="replace", n0=x.shape[0],
                             n=x.shape[0], d=x.shape[1], generations=2, n_test=4,
                             options=(("fast_path", False),))  # a pool of rows
    model = cj.make_model(static)
    pool = init_pool({"x": jnp.asarray(x), "y": jnp.asarray(y)}, capacity)
    return model, pool


@pytest.mark.parametrize("rank", [0, 1, 2, 3])
def test_linreg_rank_deficient_design_gives_min_norm_fit_and_flag(rank):
    rng = np.random.default_rng(rank)
    d, rows = 3, 6
    basis = rng.normal(size=(max(rank, 1), d))
    coef = rng.normal(size=(rows, max(rank, 1)))
    x = (coef @ basis if rank else np.zeros((rows, d))).astype(np.float32)
    y = rng.normal(size=rows).astype(np.float32)
    model, pool = _linreg_model_and_pool(x, y, capacity=rows + 2)
    params = jax.jit(model.fit)(jax.random.key(0), pool, model.init(None, None, None), {})
    assert int(params["rank"]) == rank
    collapsed = model.collapsed(params, None, None)
    assert bool(collapsed) == (rank < d)
    # minimum-norm least squares; rcond drops the singular values float32 rounding created
    want = np.linalg.pinv(x.astype(np.float64), rcond=1e-4) @ y.astype(np.float64)
    # float32 tolerance: the Gram matrix squares the condition number
    np.testing.assert_allclose(np.asarray(params["w"]), want, rtol=2e-3, atol=2e-4)


@pytest.fixture(scope="module")
def linreg_subsample():
    """One compile: T = d = 3, accumulate_subsample, sigma in {10, 1e30}, 12 seeds each."""
    return _run(model="linear_regression", regimes=("accumulate_subsample",), seeds=12,
                generations=6, n=3, d=3, hparams={"sigma": (10.0, 1e30)})


def test_linreg_subsample_with_repeated_rows_is_flagged_and_finite(linreg_subsample):
    # T = d = 3: each fit subsamples 3 of the accumulated copies of the 3 design rows, often
    # drawing the same row twice, so the design is rank-deficient; the min-norm fit keeps going.
    r, t = linreg_subsample
    t = t[t.sigma == 10.0]
    assert np.isfinite(t[METRIC_COLUMNS["linear_regression"]].to_numpy()).all()
    assert not t["nonfinite"].any()
    assert not t[t.generation == 0]["collapsed"].any()  # D0 itself has full rank
    assert t[t.generation > 0]["collapsed"].mean() > 0.2
    counts = flag_counts(t)
    assert 0 < counts["collapsed"] <= 12 and counts["nonfinite"] == 0


def test_linreg_overflow_is_flagged_nonfinite(linreg_subsample):
    r, t = linreg_subsample
    assert t[t.sigma > 1e3]["nonfinite"].all() and not t[t.sigma < 1e3]["nonfinite"].any()
