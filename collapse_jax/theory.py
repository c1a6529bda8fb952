"""Closed forms of docs/theory.md, as functions of (regime, sizes, sigma, generation).

Indexing: generation g = 0 is fit on real data (the papers' iteration t = g + 1). Every function
takes an array of generations and returns float64 numpy values (host-side, for overlays and
tests).

References:
    Gerstgrasser et al. 2024, "Is Model Collapse Inevitable?", arXiv:2404.01413.
    Dey & Donoho 2024, "Universality of the pi^2/6 pathway in avoiding model collapse".
    Kazdan et al. 2024, "Collapse or Thrive?", arXiv:2410.16713.
    Seddik et al. 2024, "How bad is training on synthetic data?".
    Alemohammad et al. 2023, "Self-Consuming Generative Models Go MAD" (variance scale lambda).
    Littler 1975, "Loss of variability at one locus in a finite population".
    Dohmatob, Feng, Kempe 2024, "Model Collapse Demystified: The Case of Regression".
    Bertrand et al. 2024, "On the Stability of Iterative Retraining of Generative Models".
    Shumailov et al. 2024, "AI models collapse when trained on recursively generated data".
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from collapse_jax.config import StaticConfig


def _g(g) -> np.ndarray:
    return np.asarray(g, dtype=np.float64)


def basel_partial(m) -> np.ndarray:
    """``sum_{j=1}^{m} 1/j^2`` elementwise (tends to pi^2/6).

    >>> float(basel_partial(1)), round(float(basel_partial(10**6)), 5)
    (1.0, 1.64493)
    """
    m = np.asarray(m, dtype=np.int64)
    top = int(np.max(m)) if m.size else 0
    cums = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, top + 1, dtype=np.float64) ** 2)])
    return cums[m]


def linreg_unit(d: int, t: int, sigma2: float) -> float:
    """``u = sigma^2 d / (T - d - 1)``, the generation-0 expected test error (needs T >= d + 2)."""
    if t < d + 2:
        raise ValueError(f"closed form needs T >= d + 2 (T={t}, d={d})")
    return sigma2 * d / (t - d - 1)


def linreg_test_error(regime: str, d: int, t: int, sigma2: float, g,
                      noise_ratio: float = 1.0) -> np.ndarray:
    """E|w_hat_g - w*|^2 for OLS refit on its own labels (fixed design, Gerstgrasser et al.).

    replace: ``u (g + 1)``; accumulate: ``u sum_{j=1}^{g+1} 1/j^2``. With synthetic labels of
    noise ``noise_ratio * sigma`` (``r``), the g synthetic rounds' terms carry ``r^2``:
    replace ``u (1 + r^2 g)``, accumulate ``u (1 + r^2 sum_{j=2}^{g+1} 1/j^2)`` (the error of
    generation g is ``sum_k A e_k`` under replace and ``sum_k A e_k / (k + 1)`` under accumulate,
    ``A = (X^T X)^{-1} X^T``, ``e_k`` round k's noise; docs/theory.md section 1).

    >>> round(float(linreg_test_error("replace", 32, 100, 100.0, 49)), 1)
    2388.1
    >>> round(float(linreg_test_error("accumulate", 32, 100, 100.0, 49)), 1)
    77.6
    >>> round(float(linreg_test_error("replace", 32, 100, 100.0, 49, noise_ratio=0.5)), 1)
    632.8
    """
    u = linreg_unit(d, t, sigma2)
    g = _g(g)
    r2 = float(noise_ratio) ** 2
    if regime == "replace":
        return u * (g + 1) if r2 == 1.0 else u * (1.0 + r2 * g)
    if regime == "accumulate":
        basel = basel_partial(g.astype(np.int64) + 1)
        return u * basel if r2 == 1.0 else u * (1.0 + r2 * (basel - 1.0))
    raise ValueError(f"no closed form for regime={regime!r}")


def gaussian_trace_ratio(
    regime: str, n: int, g, scale: float = 1.0, n0: int | None = None, unbiased: bool = False
) -> np.ndarray:
    """E[tr Sigma_g / tr Sigma] under replace, sampling N(mu_g, scale * Sigma_g).

    Generation 0 is fit on the n0 real points, ``E Sigma_0 = q0 Sigma`` with ``q0 = (n0-1)/n0``
    (1 for the unbiased estimator); each later generation samples n points with variance scale
    ``s`` and refits, ``E[Sigma_{g+1} | Sigma_g] = s q Sigma_g``. Hence (the scale acts g times,
    the estimator's shrink g + 1 times):

        E[trace ratio at g] = q0 (s q)^g,   q = (n-1)/n;   with n0 = n, s = 1: q^(g+1).

    >>> round(float(gaussian_trace_ratio("replace", 10, 3, scale=0.9)), 6)
    0.478297
    """
    if regime != "replace":
        raise ValueError(f"no closed form for regime={regime!r}")
    n0 = n if n0 is None else n0
    q0, q = (1.0, 1.0) if unbiased else ((n0 - 1) / n0, (n - 1) / n)
    return q0 * (scale * q) ** _g(g)


def gaussian_mean_error(
    regime: str, d: int, sigma2: float, n: int, g, scale: float = 1.0, n0: int | None = None
) -> np.ndarray:
    """E|mu_g - mu|^2 under replace (MLE covariance), sampling with variance scale ``s``.

    ``mu_{g+1} = mu_g + e`` with ``E|e|^2 = s tr Sigma_g / n``, so with ``r = s (n-1)/n``:
    ``d sigma^2 [1/n0 + (s/n) q0 (1 - r^g)/(1 - r)]``; for s = 1, n0 = n this is
    ``d sigma^2 (1 - ((n-1)/n)^(g+1))``.

    >>> round(float(gaussian_mean_error("replace", 2, 1.0, 10, 4)), 6)
    0.81902
    """
    if regime != "replace":
        raise ValueError(f"no closed form for regime={regime!r}")
    n0 = n if n0 is None else n0
    q0, r = (n0 - 1) / n0, scale * (n - 1) / n
    g = _g(g)
    geo = g if r == 1.0 else (1.0 - r**g) / (1.0 - r)
    return d * sigma2 * (1.0 / n0 + (scale / n) * q0 * geo)


def categorical_collision(n: int, s0, g, n0: int | None = None) -> np.ndarray:
    """E[sum_k p_g(k)^2] for multinomial resampling under replace (Seddik et al.).

    Each round of n draws maps ``1 - S`` to ``(1 - 1/n)(1 - S)`` in expectation; generation 0 is
    one round of ``n0`` draws from the true p (``S_0 = sum p^2``) and generation g adds g rounds of
    ``n``: ``1 - (1 - 1/n0)(1 - 1/n)^g (1 - S_0)``, i.e. ``m = g + 1`` rounds when n0 = n
    (docs/theory.md, section 4).

    >>> round(float(categorical_collision(10, 0.1, 0)), 4)
    0.19
    """
    n0 = n if n0 is None else n0
    return 1.0 - (1.0 - 1.0 / n0) * (1.0 - 1.0 / n) ** _g(g) * (1.0 - np.asarray(s0, np.float64))


def categorical_collapse_time(n: int, p) -> float:
    """Approximate mean generation at which multinomial resampling keeps one outcome.

    Diffusion approximation of the Wright-Fisher chain (Littler 1975): the expected time until a
    single type is left, from frequencies ``p``, is ``-2 n sum_k (1 - p_k) log(1 - p_k)``
    generations (accurate for large n; the chain's generation 0 is already one round).

    >>> round(categorical_collapse_time(100, [0.1] * 10), 1)
    189.6
    """
    p = np.asarray(p, np.float64)
    p = p[(p > 0) & (p < 1)]
    return float(-2.0 * n * np.sum((1.0 - p) * np.log1p(-p)))


def categorical_s0(prior: str, k: int, alpha: float) -> float:
    """``E[sum p^2]`` of the true p: uniform ``1/K``; zipf exact; dirichlet ``(a+1)/(K a+1)``."""
    if prior == "uniform":
        return 1.0 / k
    if prior == "zipf":
        w = np.arange(1, k + 1, dtype=np.float64) ** (-alpha)
        return float(np.sum((w / w.sum()) ** 2))
    if prior == "dirichlet":
        return (alpha + 1.0) / (k * alpha + 1.0)
    raise ValueError(f"unknown prior={prior!r}")


def location_variance_ratio(g) -> np.ndarray:
    """Var(theta_g)/Var(theta_0) for a location estimate under accumulate (Dey & Donoho)."""
    return basel_partial(_g(g).astype(np.int64) + 1)


def dohmatob_test_error(
    d: int, t: int, sigma2: float, iterations, t0: int | None = None, sigma02: float | None = None,
    exact: bool = True,
) -> np.ndarray:
    """Test error of OLS after ``iterations`` rounds of synthetic relabelling (Dohmatob et al.).

    The general form of their unregularised result: a downstream OLS fit on ``T`` rows with
    label noise ``sigma^2``, whose labels come from a chain of ``n`` synthetic generators each fit
    on ``T0`` rows with label noise ``sigma0^2``, has expected test error

        sigma^2 d / (T - d - 1) + n sigma0^2 d / (T0 - d - 1)      (exact for Gaussian designs),

    and ``sigma^2 phi / (1 - phi) + n sigma0^2 phi0 / (1 - phi0)`` with ``phi = d / T`` in the
    proportional limit (``exact=False``). With ``T0 = T``, ``sigma0 = sigma`` and ``n = g`` it is
    Gerstgrasser et al.'s replace line ``u (g + 1)`` (docs/theory.md, section 1).

    Source: Dohmatob, Feng, Kempe 2024, "Model Collapse Demystified: The Case of Regression",
    arXiv:2402.07712 (the unregularised test-error theorem of section 4).

    >>> round(float(dohmatob_test_error(4, 10, 1.0, 0)), 4), round(float(
    ...     dohmatob_test_error(4, 10, 1.0, 0, exact=False)), 4)
    (0.8, 0.6667)
    >>> round(float(dohmatob_test_error(32, 100, 100.0, 49)), 1)
    2388.1
    """
    t0 = t if t0 is None else t0
    sigma02 = sigma2 if sigma02 is None else sigma02
    if exact:
        if min(t, t0) < d + 2:
            raise ValueError(f"exact form needs T, T0 >= d + 2 (T={t}, T0={t0}, d={d})")
        one, one0 = d / (t - d - 1), d / (t0 - d - 1)
    else:
        one, one0 = (d / t) / (1 - d / t), (d / t0) / (1 - d / t0)
    return sigma2 * one + _g(iterations) * sigma02 * one0


def mixing_mean_error(d: int, sigma2: float, n0: int, lam: float, g) -> np.ndarray:
    """E|mu_g - mu|^2 of a Gaussian refit on D0 plus ``lam n0`` fresh synthetic points.

    Bertrand et al.'s fixed real + lambda synthetic mix (regime ``fixed_real_mix``). With
    ``e_g = mu_g - mean(D0)`` and ``a = lam / (1 + lam)``, one round gives
    ``e_{g+1} = a (e_g + eta)``, ``E|eta|^2 = d sigma^2 / (lam n0)`` (the fitted covariance taken
    as ``sigma^2 I``), so ``E|e_g|^2 = (d sigma^2 / n0) lam / (1 + 2 lam) (1 - a^(2g))``, and the
    error adds to that of the real mean, ``d sigma^2 / n0``:

        E|mu_g - mu|^2 = (d sigma^2 / n0) [1 + lam / (1 + 2 lam) (1 - a^(2g))].

    The excess over real data alone tends to ``lam / (1 + 2 lam)`` of it: bounded for every lam,
    the stability Bertrand et al. prove. The covariance's own fit (about ``(1 - 1/n0) sigma^2``)
    makes this an approximation to O(1/n0) relative (docs/theory.md, section 5).

    Source: Bertrand et al. 2024, "On the Stability of Iterative Retraining of Generative Models
    on their own Data", arXiv:2310.00429 (the fixed-real-plus-lambda setting).

    >>> round(float(mixing_mean_error(2, 1.0, 100, 1.0, 10**6)), 6)
    0.026667
    """
    a = lam / (1.0 + lam)
    return d * sigma2 / n0 * (1.0 + lam / (1.0 + 2.0 * lam) * (1.0 - a ** (2.0 * _g(g))))


def digamma(x) -> np.ndarray:
    """The digamma function psi(x) for x > 0 (recurrence up to x >= 6, then the asymptotic
    series; absolute error below 1e-10).

    >>> round(float(digamma(1.0)), 8)  # -Euler's gamma
    -0.57721566
    """
    x = np.asarray(x, np.float64).copy()
    acc = np.zeros_like(x)
    while np.any(x < 6.0):
        small = x < 6.0
        acc = acc - np.where(small, 1.0 / x, 0.0)
        x = np.where(small, x + 1.0, x)
    inv2 = 1.0 / (x * x)
    series = inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 * (1 / 252 - inv2 * (1 / 240 - inv2 / 132))))
    return acc + np.log(x) - 0.5 / x - series


def _polygamma12(x) -> tuple[np.ndarray, np.ndarray]:
    """psi'(x) and psi''(x) for x > 0 (recurrence up to x >= 6, then asymptotic series)."""
    x = np.asarray(x, np.float64).copy()
    p1, p2 = np.zeros_like(x), np.zeros_like(x)
    while np.any(x < 6.0):
        small = x < 6.0
        p1 = p1 + np.where(small, 1.0 / x**2, 0.0)
        p2 = p2 - np.where(small, 2.0 / x**3, 0.0)
        x = np.where(small, x + 1.0, x)
    p1 = p1 + 1 / x + 1 / (2 * x**2) + 1 / (6 * x**3) - 1 / (30 * x**5) + 1 / (42 * x**7)
    p2 = p2 - 1 / x**2 - 1 / x**3 - 1 / (2 * x**4) + 1 / (6 * x**6) - 1 / (6 * x**8)
    return p1, p2


def gaussian_unbiased_median_ratio(n: int, g, n0: int | None = None) -> np.ndarray:
    """Median of sigma_hat_g^2 / sigma^2 for a 1-D Gaussian refit with the unbiased variance.

    Under replace sigma_hat_g^2 / sigma^2 is a product of g + 1 independent factors
    ``chi^2_k / k`` (``k = n - 1``; the first with ``k0 = n0 - 1``), so its log ``L`` is a sum of
    independent terms whose cumulants are known: mean ``psi(k/2) + log(2/k)``, variance
    ``psi'(k/2)``, third cumulant ``psi''(k/2)``. The median of a near-normal sum is its mean
    minus ``kappa3 / (6 var)`` (the first Cornish-Fisher term), and the median of the ratio is
    ``exp`` of that. The mean of the ratio stays 1 while this median falls to 0: Shumailov et
    al.'s collapse of the unbiased estimator (docs/theory.md, section 2).

    Source: Shumailov et al. 2024, "AI models collapse when trained on recursively generated
    data", Nature 631 (the single-Gaussian analysis).

    >>> round(float(gaussian_unbiased_median_ratio(100, 99)), 3)
    0.364
    """
    n0 = n if n0 is None else n0
    g = _g(g)
    k, k0 = (n - 1) / 2.0, (n0 - 1) / 2.0
    (v, c3), (v0, c30) = _polygamma12(k), _polygamma12(k0)
    mean = digamma(k0) - np.log(k0) + g * (digamma(k) - np.log(k))
    var, kappa3 = v0 + g * v, c30 + g * c3
    return np.exp(mean - kappa3 / (6.0 * var))


def expected(
    static: StaticConfig, hparams: Mapping[str, float], metric: str, generations
) -> np.ndarray | None:
    """The closed-form expectation of ``metric`` for a chain, or None where there is none.

    This is what figures overlay and ``summary.json`` reports next to the Monte-Carlo mean.
    """
    g = _g(generations)
    if static.model == "linear_regression" and metric == "test_error":
        if static.regime in ("replace", "accumulate") and static.n0 >= static.d + 2:
            return linreg_test_error(static.regime, static.d, static.n0, hparams["sigma"] ** 2, g,
                                     float(hparams.get("noise_ratio", 1.0)))
    if static.model == "gaussian" and static.regime == "replace":
        scale, unbiased = float(hparams.get("scale", 1.0)), static.option("unbiased", False)
        if metric == "trace_ratio":
            return gaussian_trace_ratio(
                "replace", static.n, g, scale=scale, n0=static.n0, unbiased=unbiased
            )
        if metric == "mean_error" and not unbiased:
            return gaussian_mean_error(
                "replace", static.d, hparams["sigma"] ** 2, static.n, g, scale=scale, n0=static.n0
            )
    if static.model == "categorical" and static.regime == "replace" and metric == "collision":
        if hparams.get("temperature", 1.0) == 1.0 and hparams.get("min_p", 0.0) == 0.0:
            s0 = categorical_s0(static.option("prior", "uniform"), static.d,
                                float(hparams.get("alpha", 1.0)))
            return categorical_collision(static.n, s0, g, n0=static.n0)
    return None
