"""Qualitative checks of the CPU-sized neural studies (VAE, language model, conformer diffusion).

The papers report shapes, not closed forms (docs/theory.md, section 6): under ``replace`` the
held-out real loss rises, generation after generation; under ``accumulate`` it stays near its
generation-0 value. The checks: the replace loss rises from g = 0 to the last generation by more
than 3 s.e. (``greater``); no generation-to-generation step of the replace mean falls by more than
3 s.e. of the paired step (monotone degradation); the accumulate ratio last / first stays under
``1 + BAND`` (``at_most``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from collapse_jax.reproduce.core import Check, mean_curve, per_seed
from collapse_jax.reproduce.verdict import Estimate, mean_se, ratio_se

#: The stated band of accumulate: last / first held-out loss at most 1 + BAND.
BAND = 0.15


def qualitative(metric: str, source: str) -> Callable:
    """An ``analyze`` for a neural study whose held-out loss ``metric`` is lower-is-better."""

    def analyze(table, exp):
        checks, curves = [], []
        last = exp.generations - 1
        for regime in exp.regimes:
            v = per_seed(table, metric, regime=regime)
            curves.append(mean_curve(v, f"held-out {metric}", regime))
            if regime == "replace":
                checks.append(Check(f"replace: {metric} rise g=0 -> g={last}",
                                    mean_se(v[:, -1] - v[:, 0]), 0.0, source, mode="greater"))
                steps = np.diff(v, axis=1)
                z = [mean_se(steps[:, j]) for j in range(steps.shape[1])]
                worst = min(range(len(z)), key=lambda j: z[j].value / max(z[j].se, 1e-12))
                checks.append(Check(f"replace: smallest step g={worst} -> g={worst + 1} "
                                    f"(monotone: none falls beyond 3 s.e.)",
                                    Estimate(z[worst].value, z[worst].se, z[worst].how), 0.0,
                                    source, mode="at_least"))
            if regime == "accumulate":
                checks.append(Check(f"accumulate: {metric} g={last} / g=0 within 1 + {BAND:g}",
                                    ratio_se(v[:, -1], v[:, 0]), 1.0 + BAND, source,
                                    mode="at_most"))
        return checks, curves

    return analyze
