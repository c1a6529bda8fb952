"""Straightforward numpy baselines with the loop structure of the official Collapse-or-Thrive code.

One seed at a time, generations in a Python loop, ``np.concatenate`` to grow the pool,
``np.random.multivariate_normal`` to sample (Kazdan et al. 2024, github: KoyejoLab
Collapse-or-Thrive, ``src/fit_gaussians``, ``src/fit_linear_regressions``, and its KDE
experiments). Written here from that description (not copied); metrics use the same definitions
as ``collapse_jax`` so means over seeds can be compared:

- ``gaussian``: mean + MLE covariance, ``np.random.multivariate_normal``; trace ratio, mean error,
  log-det ratio (``slogdet``: -inf for a singular covariance, where collapse_jax floors the
  eigenvalues);
- ``linear_regression``: fixed design X (docs/theory.md), OLS by ``pinv``, relabel
  ``X w_hat + noise``; test error ``|w_hat - w*|^2``;
- ``kde``: fixed bandwidth h, sampling = a uniformly drawn point of the fit's pool + N(0, h^2 I),
  NLL of ``n_test`` held-out real points (log-sum-exp over the pool). The two moons are the i.i.d.
  version collapse_jax draws (uniform angle, a fair coin for the moon, N(0, noise^2) noise; not
  scikit-learn's evenly spaced angles), so both sides sample the same distribution.

Run directly to time one configuration, e.g. (a user's BLAS: no OpenBLAS overrides)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/baseline_numpy.py \
        gaussian replace 100 100

``--serve`` answers JSON requests (one per line on stdin, the keyword arguments of ``run`` plus
``model, regime, n, seeds``) with JSON lines: the seconds measured in this process and each
seed's metrics at the last generation. ``common.BaselineProcess`` runs it as a subprocess with the
environment users have, so a benchmark can interleave baseline and collapse_jax repeats.
"""

from __future__ import annotations

import json
import os
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


def moons(num: int, noise: float) -> np.ndarray:
    """``num`` i.i.d. two-moons points (the distribution of collapse_jax's ``moons`` source)."""
    inner = np.random.rand(num) < 0.5  # noqa: NPY002
    t = np.pi * np.random.rand(num)  # noqa: NPY002
    x = np.where(inner, 1.0 - np.cos(t), np.cos(t))
    y = np.where(inner, 1.0 - np.sin(t) - 0.5, np.sin(t))
    return np.stack([x, y], axis=1) + noise * np.random.randn(num, 2)  # noqa: NPY002


def kde_log_density(x: np.ndarray, points: np.ndarray, h: float) -> np.ndarray:
    """log of the Gaussian KDE (bandwidth h, equal weights) of ``points`` at each row of ``x``."""
    d2 = (x**2).sum(1)[:, None] + (points**2).sum(1)[None, :] - 2.0 * x @ points.T
    a = -np.maximum(d2, 0.0) / (2.0 * h * h)
    top = a.max(axis=1, keepdims=True)
    lse = np.log(np.exp(a - top).sum(axis=1)) + top[:, 0]
    return lse - np.log(points.shape[0]) - 0.5 * x.shape[1] * np.log(2.0 * np.pi * h * h)


def kde_chain(seed: int, regime: str, n: int, d: int = 2, generations: int = 100,
              h: float = 0.1, noise: float = 0.05, n_test: int = 100) -> dict[str, np.ndarray]:
    """One KDE chain on two moons: the KDE is its pool; sample a pool point + N(0, h^2 I)."""
    del d  # the moons are 2-D
    np.random.seed(seed)  # noqa: NPY002
    data = moons(n, noise)
    test = moons(n_test, noise)
    out = {"nll": np.empty(generations)}
    for g in range(generations):
        fit_on = data
        if regime == "accumulate_subsample":
            idx = np.random.choice(np.arange(data.shape[0]), size=n, replace=False)  # noqa: NPY002
            fit_on = data[idx]
        out["nll"][g] = -np.mean(kde_log_density(test, fit_on, h))
        pick = np.random.randint(0, fit_on.shape[0], size=n)  # noqa: NPY002
        new = fit_on[pick] + h * np.random.randn(n, 2)  # noqa: NPY002
        data = new if regime == "replace" else np.concatenate((data, new))
    return out


CHAINS = {"gaussian": gaussian_chain, "linear_regression": linreg_chain, "kde": kde_chain}


def run(model: str, regime: str, n: int, seeds: int, budget_s: float = float("inf"),
        min_seeds: int = 1, seed0: int = 0, **kw) -> dict:
    """Run seeds ``seed0, seed0 + 1, ..`` until ``seeds`` or the time budget (after
    ``min_seeds``); scale linearly.

    Returns the per-seed metrics of the seeds run (``[seeds_run, generations]``), the measured
    seconds, and the estimate for all ``seeds`` (measured seconds x seeds / seeds run).
    """
    chain = CHAINS[model]
    results = []
    t0 = time.perf_counter()
    for s in range(seed0, seed0 + seeds):
        results.append(chain(s, regime, n, **kw))
        if len(results) >= min_seeds and time.perf_counter() - t0 > budget_s:
            break
    secs = time.perf_counter() - t0
    metrics = {k: np.stack([r[k] for r in results]) for k in results[0]}
    return {"metrics": metrics, "seeds_run": len(results), "seconds": secs,
            "seconds_all": secs * seeds / len(results)}


def blas_info() -> dict:
    """The OpenBLAS variables and the BLAS of this process (what "as users have it" means)."""
    info = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                           "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    info["numpy"] = np.__version__
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: p.get(k) for k in ("internal_api", "architecture", "num_threads",
                                               "version")} for p in threadpool_info()]
    except ImportError:  # pragma: no cover - threadpoolctl is optional
        info["blas"] = None
    return info


def serve() -> None:
    """Answer JSON requests on stdin (see the module docstring) until EOF."""
    print(json.dumps({"ready": True, **blas_info()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        r = run(**req)
        print(json.dumps({"seconds": r["seconds"], "seeds_run": r["seeds_run"],
                          "seconds_all": r["seconds_all"], "loadavg": os.getloadavg(),
                          "final": {k: v[:, -1].tolist() for k, v in r["metrics"].items()}}),
              flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
        sys.exit(0)
    model, regime, n, seeds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    t0 = time.perf_counter()
    r = run(model, regime, n, seeds)
    print(json.dumps({"model": model, "regime": regime, "n": n, "seeds": seeds,
                      "seconds": time.perf_counter() - t0,
                      "final_means": {k: float(v[:, -1].mean()) for k, v in r["metrics"].items()}}))
