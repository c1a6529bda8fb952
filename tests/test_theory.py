"""Statistical oracle tests of the closed forms (``collapse_jax.theory``, THEORY.md): Monte-Carlo
over many vmapped seeds. Tolerance: ``|MC mean - theory| <= Z * standard error`` with the
standard error computed from the same samples (Z = 4: for a correct implementation each check
fails with probability ~6e-5).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy import special

import collapse_jax as cj
from collapse_jax import MODELS, StaticConfig, run_sweep, theory

Z = 4.0


def _sweep(model, regime, seeds, **kw):
    hp = kw.pop("hparams")
    options = tuple(sorted(kw.pop("options", {}).items()))
    static = cj.StaticConfig(model=model, regime=regime, options=options, **kw)
    import jax

    res = run_sweep(static, jax.random.key(2024), np.arange(seeds), hp, {})
    assert not res.overflow.any()
    return res.metrics


def _assert_mean(samples: np.ndarray, expected: np.ndarray, what: str) -> None:
    mean = samples.mean(0)
    sem = samples.std(0, ddof=1) / np.sqrt(samples.shape[0])
    z = np.abs(mean - expected) / sem
    assert np.all(z < Z), f"{what}: mean {mean} vs theory {expected} (|z| = {z})"


@pytest.mark.parametrize("d,t,sigma", [(4, 10, 1.0), (8, 24, 3.0), (32, 100, 10.0)])
@pytest.mark.parametrize("regime", ["replace", "accumulate"])
def test_linear_regression_test_error(regime, d, t, sigma):
    gens = 12
    seeds = 3000 if t < 100 else 1000
    m = _sweep("linear_regression", regime, seeds, n0=t, n=t, d=d, generations=gens, n_test=8,
               hparams={"sigma": sigma})
    g = np.array([0, 1, 5, gens - 1])
    expected = theory.linreg_test_error(regime, d, t, sigma**2, g)
    _assert_mean(m["test_error"][:, g].astype(np.float64), expected,
                 f"linreg {regime} d={d} T={t} sigma={sigma}")


@pytest.mark.parametrize("ratio", [0.5, 2.0])
@pytest.mark.parametrize("regime", ["replace", "accumulate"])
def test_linear_regression_synthetic_noise_ratio(regime, ratio):
    """Synthetic labels with noise ``ratio * sigma``: replace u (1 + r^2 g), accumulate
    u (1 + r^2 sum_{2<=j<=g+1} 1/j^2) (Dohmatob et al.'s sigma0 = r sigma), as overlaid by
    ``theory.expected``."""
    d, t, gens, seeds = 4, 10, 8, 3000
    hp = {"sigma": 1.0, "noise_ratio": ratio}
    m = _sweep("linear_regression", regime, seeds, n0=t, n=t, d=d, generations=gens, n_test=8,
               hparams=hp)
    static = cj.StaticConfig(model="linear_regression", regime=regime, n0=t, n=t, d=d,
                             generations=gens, n_test=8)
    g = np.array([0, 1, 4, gens - 1])
    expected = theory.expected(static, hp, "test_error", g)
    np.testing.assert_allclose(expected, theory.linreg_test_error(regime, d, t, 1.0, g, ratio))
    assert not np.allclose(expected[1:], theory.linreg_test_error(regime, d, t, 1.0, g)[1:])
    _assert_mean(m["test_error"][:, g].astype(np.float64), expected,
                 f"linreg {regime} noise_ratio={ratio}")


def test_linear_regression_accumulate_is_bounded_replace_is_not():
    d, t, gens = 4, 10, 40
    rep = _sweep("linear_regression", "replace", 2000, n0=t, n=t, d=d, generations=gens,
                 n_test=8, hparams={"sigma": 1.0})["test_error"].mean(0)
    acc = _sweep("linear_regression", "accumulate", 2000, n0=t, n=t, d=d, generations=gens,
                 n_test=8, hparams={"sigma": 1.0})["test_error"].mean(0)
    u = theory.linreg_unit(d, t, 1.0)
    assert acc.max() < 1.2 * u * np.pi**2 / 6  # bounded by u pi^2/6 (20% = > 10 s.e. here)
    assert rep[-1] > 20 * u  # replace: u * 40 in expectation


@pytest.mark.parametrize("n,d", [(8, 2), (20, 3)])
def test_gaussian_replace_trace_ratio_and_mean_error(n, d):
    gens = 16
    m = _sweep("gaussian", "replace", 4000, n0=n, n=n, d=d, generations=gens, n_test=4,
               hparams={"sigma": 1.5, "scale": 1.0})
    g = np.array([0, 3, 9, gens - 1])
    _assert_mean(m["trace_ratio"][:, g].astype(np.float64),
                 theory.gaussian_trace_ratio("replace", n, g), f"trace ratio n={n}")
    _assert_mean(m["mean_error"][:, g].astype(np.float64),
                 theory.gaussian_mean_error("replace", d, 1.5**2, n, g), f"mean error n={n}")


def test_gaussian_accumulate_stays_bounded():
    n, d, gens, seeds = 10, 2, 80, 2000
    kw = dict(n0=n, n=n, d=d, generations=gens, n_test=4, hparams={"sigma": 1.0, "scale": 1.0})
    acc = _sweep("gaussian", "accumulate", seeds, **kw)
    rep = _sweep("gaussian", "replace", seeds, **kw)
    tr_acc, tr_rep = acc["trace_ratio"].astype(np.float64), rep["trace_ratio"].astype(np.float64)
    # replace decays as ((n-1)/n)^(g+1) -> 2e-4 at g = 79; accumulate converges to a constant:
    assert tr_rep.mean(0)[-1] < 0.01
    late = tr_acc[:, -1].mean()
    mid = tr_acc[:, gens // 2].mean()
    sem = tr_acc[:, -1].std(ddof=1) / np.sqrt(seeds)
    assert late > 0.5, late  # bounded away from 0 (it cannot fall below its g=0 value much)
    assert abs(late - mid) < Z * sem + 0.02, (mid, late)  # converged: flat in the second half
    # mean error below about (d sigma^2 / n) pi^2/6 (location estimate with accumulated data)
    me = acc["mean_error"][:, -1].astype(np.float64)
    bound = d / n * np.pi**2 / 6
    assert me.mean() < bound + Z * me.std(ddof=1) / np.sqrt(seeds), (me.mean(), bound)


def test_gaussian_1d_unbiased_replace_mean_constant_median_decays():
    n, gens, seeds = 100, 100, 4000
    m = _sweep("gaussian", "replace", seeds, n0=n, n=n, d=1, generations=gens, n_test=4,
               hparams={"sigma": 1.0, "scale": 1.0}, options={"unbiased": True})
    var = m["trace_ratio"].astype(np.float64)  # sigma_hat^2 / sigma^2
    g = np.array([0, 9, 49, 99])
    _assert_mean(var[:, g], np.ones(len(g)), "E[sigma_hat^2] is sigma^2 for every g")
    # log sigma_hat_g^2 is a sum of g+1 i.i.d. log(chi2_{n-1}/(n-1)): exact mean
    per_gen = special.digamma((n - 1) / 2) + np.log(2 / (n - 1))
    _assert_mean(np.log(var[:, g]), (g + 1) * per_gen, "E[log sigma_hat^2]")
    med = np.median(var, axis=0)
    assert med[0] > med[49] > med[99]
    # THEORY.md: median at g = 99 about 0.37 sigma^2 (exp(100 * per_gen) = 0.363)
    assert abs(np.log(med[99]) - 100 * per_gen) < 0.15


# ----------------------------------------------------------------------------------------------
# categorical collisions and the Gaussian's sampling bias


def _sweep_static(static, hp, chains, root=0):
    spec = MODELS[static.model]
    values = {**spec.hparams, **hp}
    full = {k: np.broadcast_to(np.asarray(v, np.float32), (chains,)) for k, v in values.items()}
    return run_sweep(static, jax.random.key(root), np.arange(chains), full, {})


def _within(mc: np.ndarray, expected: np.ndarray, k: float = 4.0) -> None:
    """Column means of ``mc`` [chains, G] within ``k`` standard errors of ``expected`` [G]."""
    mean = mc.mean(axis=0)
    se = mc.std(axis=0, ddof=1) / np.sqrt(mc.shape[0])
    z = (mean - expected) / np.maximum(se, 1e-12)
    assert np.all(np.abs(z) < k), f"z-scores {np.round(z, 2)}"


def test_categorical_collision_follows_theory():
    """E[sum p^2] = 1 - (1 - 1/n)^(g+1) (1 - 1/K) for a uniform p (THEORY.md, m = g + 1)."""
    n, k, gens, chains = 10, 10, 30, 2000
    static = StaticConfig(model="categorical", regime="replace", n0=n, n=n, d=k,
                          generations=gens, n_test=4, options=(("prior", "uniform"),))
    res = _sweep_static(static, {}, chains)
    coll = res.metrics["collision"]
    want = 1.0 - (1.0 - 1.0 / n) ** (np.arange(gens) + 1.0) * (1.0 - 1.0 / k)
    np.testing.assert_allclose(
        theory.expected(static, MODELS["categorical"].hparams, "collision", np.arange(gens)),
        want)
    _within(coll, want)
    # survivors never increase under replace; collapsed <=> one survivor
    surv = res.metrics["survivors"]
    assert np.all(np.diff(surv, axis=1) <= 0)
    np.testing.assert_array_equal(res.metrics["collapsed"], (surv == 1).astype(np.float32))
    assert 0.2 < res.metrics["collapsed"][:, -1].mean() < 1.0


def test_sampling_bias_follows_closed_form():
    """Replace with variance scale s: E[trace ratio at g] = q (s q)^g, q = (n-1)/n (theory.py)."""
    n, gens, chains = 100, 30, 1000
    static = StaticConfig(model="gaussian", regime="replace", n0=n, n=n, d=2,
                          generations=gens, n_test=10)
    scales = np.float32([0.9, 1.0])
    res = _sweep_static(static, {"scale": np.repeat(scales, chains)}, 2 * chains)
    tr = res.metrics["trace_ratio"].reshape(2, chains, gens)
    q, g = (n - 1) / n, np.arange(gens)
    for i, s in enumerate(scales):
        want = q * (float(s) * q) ** g
        np.testing.assert_allclose(
            theory.expected(static, {"sigma": 1.0, "scale": float(s)}, "trace_ratio", g), want)
        _within(tr[i], want)
    assert tr[0, :, -1].mean() < 0.1 * tr[1, :, -1].mean()


def test_dohmatob_reduces_to_gerstgrasser_and_limit():
    g = np.arange(10)
    np.testing.assert_allclose(theory.dohmatob_test_error(8, 24, 2.0, g),
                               theory.linreg_test_error("replace", 8, 24, 2.0, g))
    # T0 != T, sigma0 != sigma: each term on its own
    assert theory.dohmatob_test_error(4, 10, 1.0, 3, t0=20, sigma02=2.0) == pytest.approx(
        4 / 5 + 3 * 2.0 * 4 / 15)
    assert theory.dohmatob_test_error(4, 10, 1.0, 0, exact=False) == pytest.approx(0.4 / 0.6)


def test_mixing_mean_error_matches_its_recursion():
    """The closed form equals iterating e_{g+1} = a (e_g + eta) in expectation."""
    d, s2, n0, lam = 2, 1.5, 50, 0.7
    a, v, out = lam / (1 + lam), 0.0, []
    for _ in range(12):
        out.append(d * s2 / n0 + v)
        v = a**2 * (v + d * s2 / (lam * n0))
    np.testing.assert_allclose(theory.mixing_mean_error(d, s2, n0, lam, np.arange(12)), out)


def test_digamma_and_unbiased_median_against_numpy_monte_carlo():
    scipy_special = pytest.importorskip("scipy.special")
    x = np.array([0.3, 1.0, 2.5, 7.0, 49.5])
    np.testing.assert_allclose(theory.digamma(x), scipy_special.digamma(x), atol=1e-9)
    rng = np.random.default_rng(0)
    n, g = 20, 30
    prod = np.prod(rng.chisquare(n - 1, size=(20000, g + 1)) / (n - 1), axis=1)
    med, ref = np.median(prod), theory.gaussian_unbiased_median_ratio(n, g)
    assert abs(np.log(med) - np.log(ref)) < 0.03  # s.e. of the log median ~0.01
