"""float32 by default, float64 on request (``Experiment.x64``) for the closed-form settings.

Each test states its tolerance per dtype. float64 runs turn ``jax_enable_x64`` on through the
``jax.enable_x64`` context (inside ``run_experiment``, or explicitly here), so x64 never leaks
into other tests: ``test_x64_does_not_leak`` checks it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import collapse_jax as cj
from collapse_jax import chain as C
from collapse_jax.config import hparams_from

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


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_fit_matches_float64_reference(dtype, fast_path):
    with _x64(dtype):
        real, params, metrics = _chain_g0("gaussian", dtype, n0=50, n=50, d=4, n_test=20,
                                          options=(("fast_path", fast_path),))
        # the fast path carries a lower-triangular root of the covariance instead
        cov = params["root"] @ params["root"].T if fast_path else params["cov"]
        assert cov.dtype == jnp.dtype(dtype) and metrics["w2"].dtype == jnp.dtype(dtype)
        x = np.asarray(real.train, np.float64)
        mean, cov = np.asarray(params["mean"]), np.asarray(cov)
        trace_ratio = float(metrics["trace_ratio"])
    ref_mean = x.mean(axis=0)
    ref_cov = np.cov(x.T, bias=True)
    np.testing.assert_allclose(mean, ref_mean, rtol=RTOL[dtype], atol=RTOL[dtype])
    np.testing.assert_allclose(cov, ref_cov, rtol=RTOL[dtype], atol=RTOL[dtype])
    np.testing.assert_allclose(trace_ratio, np.trace(ref_cov) / 4.0, rtol=RTOL[dtype])


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


def test_x64_keeps_finite_what_float32_overflows():
    """sigma = 1e25: sigma^2 overflows float32 (flagged nonfinite) but not float64."""
    base = cj.Experiment(name="big", model="gaussian", regimes=("replace",), seeds=2,
                         generations=3, n=6, d=2, n_test=8, hparams={"sigma": 1e25}, x64=True)
    t = cj.run_experiment(base).table
    assert not t["nonfinite"].any() and not t["collapsed"].any()
    g0 = t[t.generation == 0]
    assert np.isfinite(g0["trace_ratio"]).all() and (g0["trace_ratio"] > 0.05).all()
    with pytest.raises(cj.ConfigError, match="overflows float32"):
        cj.validate(dataclasses.replace(base, hparams={"sigma": 1e39}, x64=False))


def test_x64_does_not_leak():
    before = jax.config.jax_enable_x64
    # the same program as test_x64_keeps_finite_what_float32_overflows (compiled once)
    t = cj.run_experiment(cj.Experiment(
        name="leak", model="gaussian", regimes=("replace",), seeds=2, generations=3, n=6, d=2,
        n_test=8, x64=True)).table
    assert t["trace_ratio"].dtype == np.float64
    assert before is False and jax.config.jax_enable_x64 is False
    assert jnp.zeros(1).dtype == jnp.float32
    assert jnp.asarray(1.0).dtype == jnp.float32
