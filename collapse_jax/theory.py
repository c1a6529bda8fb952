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


def linreg_test_error(regime: str, d: int, t: int, sigma2: float, g) -> np.ndarray:
    """E|w_hat_g - w*|^2 for OLS refit on its own labels (fixed design, Gerstgrasser et al.).

    replace: ``u (g + 1)``; accumulate: ``u sum_{j=1}^{g+1} 1/j^2``.

    >>> round(float(linreg_test_error("replace", 32, 100, 100.0, 49)), 1)
    2388.1
    >>> round(float(linreg_test_error("accumulate", 32, 100, 100.0, 49)), 1)
    77.6
    """
    u = linreg_unit(d, t, sigma2)
    g = _g(g)
    if regime == "replace":
        return u * (g + 1)
    if regime == "accumulate":
        return u * basel_partial(g.astype(np.int64) + 1)
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


def expected(
    static: StaticConfig, hparams: Mapping[str, float], metric: str, generations
) -> np.ndarray | None:
    """The closed-form expectation of ``metric`` for a chain, or None where there is none.

    This is what figures overlay and ``summary.json`` reports next to the Monte-Carlo mean.
    """
    g = _g(generations)
    if static.model == "linear_regression" and metric == "test_error":
        if static.regime in ("replace", "accumulate") and static.n0 >= static.d + 2:
            return linreg_test_error(static.regime, static.d, static.n0, hparams["sigma"] ** 2, g)
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
