"""Straightforward numpy baselines with the loop structure of the official Collapse-or-Thrive code.

One seed at a time, generations in a Python loop, ``np.concatenate`` to grow the pool,
``np.random.multivariate_normal`` to sample (Kazdan et al. 2024, github: KoyejoLab
Collapse-or-Thrive, ``src/fit_gaussians``, ``src/fit_linear_regressions``). Written here from that
description (not copied); metrics use the same definitions as ``collapse_jax`` so means over
seeds can be compared.

Run directly to time one configuration, e.g. (a user's BLAS: no OpenBLAS overrides)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/baseline_numpy.py \
        gaussian replace 100 100
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def gaussian_chain(seed: int, regime: str, n: int, d: int = 10, generations: int = 100,
                   sigma2: float = 1.0) -> dict[str, np.ndarray]:
    """One Gaussian chain: fit mean + MLE covariance, sample n, replace / accumulate / subsample."""
    np.random.seed(seed)  # noqa: NPY002 - the legacy global RNG, as the original
    init_mean, init_cov = np.zeros(d), sigma2 * np.eye(d)
    data = np.random.multivariate_normal(init_mean, init_cov, size=n)  # noqa: NPY002
    trace0, logdet0 = np.trace(init_cov), np.linalg.slogdet(init_cov)[1]
    out = {k: np.empty(generations) for k in ("trace_ratio", "mean_error", "logdet_ratio")}
    for g in range(generations):
        fit_on = data
        if regime == "accumulate_subsample":
            idx = np.random.choice(np.arange(data.shape[0]), size=n, replace=False)  # noqa: NPY002
            fit_on = data[idx]
        mean = np.mean(fit_on, axis=0)
        cov = np.cov(fit_on, rowvar=False, bias=True).reshape(d, d)
        out["trace_ratio"][g] = np.trace(cov) / trace0
        out["mean_error"][g] = np.sum((mean - init_mean) ** 2)
        out["logdet_ratio"][g] = np.linalg.slogdet(cov)[1] - logdet0
        new = np.random.multivariate_normal(mean, cov, size=n)  # noqa: NPY002
        data = new if regime == "replace" else np.concatenate((data, new))
    return out


def linreg_chain(seed: int, regime: str, n: int, d: int = 10, generations: int = 100,
                 sigma2: float = 1.0) -> dict[str, np.ndarray]:
    """One linear-regression chain: fixed design, relabel with the last fit, OLS by pinv."""
    np.random.seed(seed)  # noqa: NPY002
    sigma = np.sqrt(sigma2)
    w_star = np.random.randn(d)  # noqa: NPY002
    x_init = np.random.randn(n, d)  # noqa: NPY002
    x, y = x_init.copy(), x_init @ w_star + sigma * np.random.randn(n)  # noqa: NPY002
    out = {"test_error": np.empty(generations)}
    for g in range(generations):
        if regime == "accumulate_subsample":
            idx = np.random.choice(np.arange(x.shape[0]), size=n, replace=False)  # noqa: NPY002
            w_hat = np.linalg.pinv(x[idx]) @ y[idx]
        else:
            w_hat = np.linalg.pinv(x) @ y
        out["test_error"][g] = np.sum((w_hat - w_star) ** 2)
        y_new = x_init @ w_hat + sigma * np.random.randn(n)  # noqa: NPY002
        if regime == "replace":
            y = y_new
        else:
            x, y = np.concatenate((x, x_init)), np.concatenate((y, y_new))
    return out


CHAINS = {"gaussian": gaussian_chain, "linear_regression": linreg_chain}


def run(model: str, regime: str, n: int, seeds: int, budget_s: float = float("inf"),
        min_seeds: int = 1, **kw) -> dict:
    """Run seeds 0.. until ``seeds`` or the time budget (after ``min_seeds``); scale linearly.

    Returns the per-seed metrics of the seeds run, the measured seconds, and the estimate for
    all ``seeds`` (measured seconds x seeds / seeds run).
    """
    chain = CHAINS[model]
    results = []
    t0 = time.perf_counter()
    for s in range(seeds):
        results.append(chain(s, regime, n, **kw))
        if len(results) >= min_seeds and time.perf_counter() - t0 > budget_s:
            break
    secs = time.perf_counter() - t0
    metrics = {k: np.stack([r[k] for r in results]) for k in results[0]}
    return {"metrics": metrics, "seeds_run": len(results), "seconds": secs,
            "seconds_all": secs * seeds / len(results)}


if __name__ == "__main__":
    model, regime, n, seeds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    t0 = time.perf_counter()
    r = run(model, regime, n, seeds)
    print(json.dumps({"model": model, "regime": regime, "n": n, "seeds": seeds,
                      "seconds": time.perf_counter() - t0,
                      "final_means": {k: float(v[:, -1].mean()) for k, v in r["metrics"].items()}}))
