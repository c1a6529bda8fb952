"""Estimates with standard errors, and the verdict of one checked number against its reference.

A check compares a simulated estimate (a mean, a median or a ratio of means over seeds, with its
standard error) to a reference (a closed form from ``collapse_jax.theory`` or a published
number). The distance is ``z = (simulated - reference) / SE``. Modes:

- ``equal``: PASS when ``|z| <= 3``, or, for an approximate or published Monte-Carlo reference
  with a stated relative tolerance ``rel_tol``, when ``|simulated - reference| <= rel_tol |ref|``;
- ``at_most`` / ``at_least``: a bound; PASS unless the estimate is more than 3 SE beyond it;
- ``greater``: a qualitative claim "larger than the reference"; PASS when ``z > 3``.

Anything else is DIFFERS, reported with its distance in standard errors.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: Standard errors within which a simulated number agrees with its reference.
THRESHOLD = 3.0
MODES = ("equal", "at_most", "at_least", "greater")


class Estimate(NamedTuple):
    """A simulated number and its standard error (what ``se`` is: ``how``)."""

    value: float
    se: float
    how: str = "mean over seeds, s.e. of the mean"


class Verdict(NamedTuple):
    """The outcome of one check: ``status`` PASS or DIFFERS, ``z`` the distance in SE."""

    status: str
    z: float


def mean_se(x) -> Estimate:
    """Mean of ``x`` (one value per seed) with the standard error of the mean.

    >>> e = mean_se([1.0, 2.0, 3.0])
    >>> e.value, round(e.se, 4)
    (2.0, 0.5774)
    """
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return Estimate(float(np.mean(x)), float(np.std(x, ddof=1) / np.sqrt(len(x))))


def median_ci(x, z: float = 1.96) -> tuple[float, float, float]:
    """Median of ``x`` with a distribution-free confidence interval from order statistics
    (0-based ranks ``(N-1)/2 -+ z sqrt(N)/2``; ``z = 1.96``: about 95%).

    >>> median_ci(np.arange(101.0))
    (50.0, 40.0, 60.0)
    """
    s = np.sort(np.asarray(x, np.float64))
    n = len(s)
    half = z * np.sqrt(n) / 2
    mid = (n - 1) / 2  # 0-based rank of the median
    lo = int(np.clip(np.floor(mid - half), 0, n - 1))
    hi = int(np.clip(np.ceil(mid + half), 0, n - 1))
    return float(np.median(s)), float(s[lo]), float(s[hi])


def median_se(x) -> Estimate:
    """Median of ``x`` with a standard error: the half-width of its 95% order-statistic
    interval over 1.96 (larger half of an asymmetric interval)."""
    med, lo, hi = median_ci(x)
    return Estimate(med, max(med - lo, hi - med) / 1.96, "median over seeds, order-statistic s.e.")


def ratio_se(a, b) -> Estimate:
    """``mean(a) / mean(b)`` over paired seeds with its delta-method standard error.

    >>> e = ratio_se([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    >>> e.value, round(e.se, 6)
    (2.0, 0.0)
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    ma, mb, n = a.mean(), b.mean(), len(a)
    cov = np.cov(a, b, ddof=1)
    var = (cov[0, 0] / mb**2 - 2 * ma * cov[0, 1] / mb**3 + ma**2 * cov[1, 1] / mb**4) / n
    return Estimate(float(ma / mb), float(np.sqrt(max(var, 0.0))),
                    "ratio of means over seeds, delta-method s.e.")


def difference(a: Estimate, b: Estimate) -> Estimate:
    """``a - b`` of two independent estimates (their standard errors add in quadrature)."""
    return Estimate(a.value - b.value, float(np.hypot(a.se, b.se)),
                    "difference of two estimates, s.e. in quadrature")


def judge(est: Estimate, reference: float, mode: str = "equal", rel_tol: float = 0.0) -> Verdict:
    """PASS or DIFFERS for ``est`` against ``reference`` (see the module docstring).

    >>> v = judge(Estimate(10.2, 0.1), 10.0)
    >>> v.status, round(v.z, 6)
    ('PASS', 2.0)
    >>> far = Estimate(11.0, 0.1)
    >>> judge(far, 10.0).status, judge(far, 10.0, rel_tol=0.1).status
    ('DIFFERS', 'PASS')
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: allowed: {', '.join(MODES)}")
    diff = est.value - reference
    z = diff / est.se if est.se > 0 else (0.0 if diff == 0 else float(np.copysign(np.inf, diff)))
    if not np.isfinite(est.value):
        return Verdict("DIFFERS", float("nan"))
    ok = {
        "equal": abs(z) <= THRESHOLD or abs(diff) <= rel_tol * abs(reference),
        "at_most": z <= THRESHOLD,
        "at_least": z >= -THRESHOLD,
        "greater": z > THRESHOLD,
    }[mode]
    return Verdict("PASS" if ok else "DIFFERS", float(z))
