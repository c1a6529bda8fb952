"""Closed forms of THEORY.md, as functions of (regime, sizes, sigma, generation).

Indexing: generation g = 0 is fit on real data (the papers' iteration t = g + 1). Every function
takes an array of generations and returns float64 numpy values (host-side, for overlays and
tests).

References:
    Gerstgrasser et al. 2024, "Is Model Collapse Inevitable?", arXiv:2404.01413.
    Dey & Donoho 2024, "Universality of the pi^2/6 pathway in avoiding model collapse".
    Kazdan et al. 2024, "Collapse or Thrive?", arXiv:2410.16713.
    Seddik et al. 2024, "How bad is training on synthetic data?".
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


def gaussian_trace_ratio(regime: str, n: int, g) -> np.ndarray:
    """E[tr Sigma_g / tr Sigma] under replace with the MLE covariance: ``((n-1)/n)^(g+1)``."""
    if regime != "replace":
        raise ValueError(f"no closed form for regime={regime!r}")
    return ((n - 1) / n) ** (_g(g) + 1)


def gaussian_mean_error(regime: str, d: int, sigma2: float, n: int, g) -> np.ndarray:
    """E|mu_g - mu|^2 under replace (MLE covariance): ``d sigma^2 (1 - ((n-1)/n)^(g+1))``."""
    if regime != "replace":
        raise ValueError(f"no closed form for regime={regime!r}")
    return d * sigma2 * (1.0 - ((n - 1) / n) ** (_g(g) + 1))


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
    if static.model == "gaussian" and static.regime == "replace" and static.n == static.n0:
        if static.option("unbiased", False) or hparams.get("scale", 1.0) != 1.0:
            return None
        if metric == "trace_ratio":
            return gaussian_trace_ratio("replace", static.n, g)
        if metric == "mean_error":
            return gaussian_mean_error("replace", static.d, hparams["sigma"] ** 2, static.n, g)
    return None
