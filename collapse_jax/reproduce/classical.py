"""The classical studies: linear regression, Gaussian, KDE, GMM, categorical, location.

Each ``analyze_*`` reads the run's table and returns its checks (against ``collapse_jax.theory``
or a published number) and its curves; the ``Study`` entries are in ``studies.py``.
Generation ``g`` is the papers' iteration ``t = g + 1`` (docs/theory.md).
"""

from __future__ import annotations

import numpy as np

from collapse_jax import theory as T
from collapse_jax.models.categorical import first_collapse
from collapse_jax.reproduce.core import Check, mean_curve, median_curve, per_seed, select
from collapse_jax.reproduce.verdict import Estimate, difference, mean_se, median_se, ratio_se

GERSTGRASSER = "Gerstgrasser et al. 2024, arXiv:2404.01413, Thm. 1 (replace) / Thm. 2 (accumulate)"
KAZDAN = "Kazdan et al. 2024, arXiv:2410.16713 (accumulate-subsample lies between the two)"
SHUMAILOV = "Shumailov et al. 2024, Nature 631 (single Gaussian, recursive refit)"


def _sigma2(exp) -> float:
    return float(exp.hparams.get("sigma", 1.0)) ** 2


def _last(values: np.ndarray) -> np.ndarray:
    return values[:, -1]


def analyze_linreg(table, exp):
    """Replace grows as u (g + 1); accumulate stays under u pi^2/6 (fixed design)."""
    d, t, s2, gens = exp.d, exp.n, _sigma2(exp), exp.generations
    g = np.arange(gens)
    checks, curves = [], []
    for regime in [r for r in ("replace", "accumulate") if r in exp.regimes]:
        v = per_seed(table, "test_error", regime=regime)
        ref = T.linreg_test_error(regime, d, t, s2, g)
        curves.append(mean_curve(v, "test error |w_hat - w*|^2", regime, ref))
        checks.append(Check(f"{regime}: test error at g={gens - 1} (d={d}, T={t}, "
                            f"sigma^2={s2:g})", mean_se(_last(v)), float(ref[-1]),
                            "theory.linreg_test_error; " + GERSTGRASSER))
    if "replace" in exp.regimes and gens > 1:
        v = per_seed(table, "test_error", regime="replace")
        checks.append(Check("replace: growth per generation (e_last - e_0)/(G - 1) = u",
                            mean_se((v[:, -1] - v[:, 0]) / (gens - 1)),
                            T.linreg_unit(d, t, s2), "theory.linreg_unit; " + GERSTGRASSER))
    if "accumulate" in exp.regimes:
        v = per_seed(table, "test_error", regime="accumulate")
        checks.append(Check(f"accumulate: E e_{gens - 1} / E e_0 under pi^2/6",
                            ratio_se(v[:, -1], v[:, 0]), float(np.pi**2 / 6),
                            "theory.basel_partial limit; " + GERSTGRASSER, mode="at_most"))
    return checks, curves


def analyze_linreg_paper(table, exp):
    """As ``analyze_linreg``, plus the paper-figure numbers at g = 49 (d 32, T 100, sigma^2 100)."""
    checks, curves = analyze_linreg(table, exp)
    if exp.generations == 50 and (exp.d, exp.n, _sigma2(exp)) == (32, 100, 100.0):
        for regime, pub in (("replace", 2388.1), ("accumulate", 77.6)):
            v = per_seed(table, "test_error", regime=regime)
            checks.append(Check(f"{regime}: test error at g=49, the paper's setting",
                                mean_se(_last(v)), pub,
                                "Gerstgrasser et al. 2024, linear-regression theory figure "
                                "(u = 47.76; THEORY.md example)"))
    return checks, curves


def analyze_dohmatob(table, exp):
    """E = sigma^2 d/(T-d-1) + n sigma0^2 d/(T0-d-1) at every swept T and synthetic noise
    sigma0 = noise_ratio x sigma (replace, T0 = T)."""
    d, s2, gens = exp.d, _sigma2(exp), exp.generations
    ratios = np.atleast_1d(exp.hparams.get("noise_ratio", 1.0))
    checks, curves = [], []
    for t in np.atleast_1d(exp.n):
        for r in ratios:
            where = {"regime": "replace", "n": int(t)}
            if len(ratios) > 1:
                where["noise_ratio"] = float(r)
            v = per_seed(table, "test_error", **where)
            ref = T.dohmatob_test_error(d, int(t), s2, np.arange(gens), sigma02=s2 * float(r) ** 2)
            label = f"T={t} (d/T={d / t:.2f}), sigma0={float(r):g} sigma"
            curves.append(mean_curve(v, "test error (replace)", label, ref))
            checks.append(Check(f"T={t}, d={d}, sigma0^2={s2 * float(r) ** 2:g}: test error "
                                f"after n={gens - 1} synthetic rounds", mean_se(_last(v)),
                                float(ref[-1]), "theory.dohmatob_test_error; Dohmatob, Feng, "
                                "Kempe 2024, arXiv:2402.07712, sec. 4"))
    return checks, curves


def analyze_exact(table, exp):
    """Small T: the finite-sample d/(T-d-1) holds, the proportional-limit phi/(1-phi) does not."""
    d, t, s2 = exp.d, exp.n, _sigma2(exp)
    checks, curves = analyze_linreg(table, exp)
    v0 = per_seed(table, "test_error", regime="replace")[:, 0]
    exact = float(T.dohmatob_test_error(d, t, s2, 0))
    asym = float(T.dohmatob_test_error(d, t, s2, 0, exact=False))
    checks.insert(0, Check(f"g=0 test error, exact sigma^2 d/(T-d-1) (d={d}, T={t})",
                           mean_se(v0), exact, "theory.linreg_unit (inverse-Wishart mean); "
                           "Gerstgrasser et al. 2024 / Dohmatob et al. 2024"))
    checks.insert(1, Check("g=0 test error vs the proportional limit sigma^2 phi/(1-phi)",
                           mean_se(v0), asym, "theory.dohmatob_test_error(exact=False): "
                           "must DIFFER at small T", expect="DIFFERS"))
    return checks, curves


def _ordering(table, exp, metric, higher_is_worse=True):
    """Kazdan et al.'s ordering at the last generation: replace, then accumulate_subsample,
    then accumulate (worst to best)."""
    last = {r: mean_se(_last(per_seed(table, metric, regime=r))) for r in exp.regimes}
    sign = 1.0 if higher_is_worse else -1.0
    out = []
    for worse, better in (("replace", "accumulate_subsample"),
                          ("accumulate_subsample", "accumulate")):
        if worse in last and better in last:
            diff = difference(last[worse], last[better])
            out.append(Check(f"{metric} at g={exp.generations - 1}: {worse} "
                             f"{'above' if sign > 0 else 'below'} {better}",
                             Estimate(sign * diff.value, diff.se, diff.how), 0.0, KAZDAN,
                             mode="greater"))
    return out


def analyze_kazdan_gaussian(table, exp):
    """Gaussian: replace on its closed forms; accumulate's mean error bounded; the ordering."""
    d, n, s2, gens = exp.d, exp.n, _sigma2(exp), exp.generations
    g = np.arange(gens)
    checks, curves = [], []
    for regime in exp.regimes:
        tr = per_seed(table, "trace_ratio", regime=regime)
        ref = T.gaussian_trace_ratio(regime, n, g) if regime == "replace" else None
        curves.append(mean_curve(tr, "trace ratio tr(Sigma_g)/tr(Sigma)", regime, ref))
    tr = per_seed(table, "trace_ratio", regime="replace")
    me = per_seed(table, "mean_error", regime="replace")
    checks.append(Check(f"replace: trace ratio at g={gens - 1} = ((n-1)/n)^(g+1)",
                        mean_se(_last(tr)), float(T.gaussian_trace_ratio("replace", n, gens - 1)),
                        "theory.gaussian_trace_ratio; " + KAZDAN))
    checks.append(Check(f"replace: mean error at g={gens - 1} = d sigma^2 (1 - q^(g+1))",
                        mean_se(_last(me)),
                        float(T.gaussian_mean_error("replace", d, s2, n, gens - 1)),
                        "theory.gaussian_mean_error; " + KAZDAN))
    if "accumulate" in exp.regimes:
        acc = per_seed(table, "mean_error", regime="accumulate")
        checks.append(Check(f"accumulate: mean error at g={gens - 1} under (d sigma^2/n) pi^2/6",
                            mean_se(_last(acc)), d * s2 / n * np.pi**2 / 6,
                            "docs/theory.md sec. 2 bound; " + KAZDAN, mode="at_most"))
    return checks + _ordering(table, exp, "trace_ratio", higher_is_worse=False), curves


def analyze_kazdan_kde(table, exp):
    """KDE: held-out NLL ordered replace > accumulate_subsample > accumulate."""
    curves = [mean_curve(per_seed(table, "nll", regime=r), "held-out NLL", r, log=True)
              for r in exp.regimes]
    return _ordering(table, exp, "nll"), curves


def analyze_kazdan_linreg(table, exp):
    """Linear regression with accumulate_subsample between replace and accumulate."""
    checks, curves = analyze_linreg(table, exp)
    if "accumulate_subsample" in exp.regimes:
        curves.append(mean_curve(per_seed(table, "test_error", regime="accumulate_subsample"),
                                 "test error |w_hat - w*|^2", "accumulate_subsample"))
    return checks + _ordering(table, exp, "test_error"), curves


def analyze_shumailov(table, exp):
    """1-D Gaussian under replace: mean and median of the variance ratio (ddof 1 or MLE)."""
    n, gens = exp.n, exp.generations
    unbiased = bool(exp.options.get("unbiased", False))
    g = np.arange(gens)
    v = per_seed(table, "trace_ratio", regime="replace")
    mean_ref = T.gaussian_trace_ratio("replace", n, g, unbiased=unbiased)
    med_ref = T.gaussian_unbiased_median_ratio(n, g)
    if not unbiased:
        med_ref = med_ref * ((n - 1) / n) ** (g + 1)
    what = "ddof 1" if unbiased else "MLE"
    src = "theory.gaussian_unbiased_median_ratio" + ("" if unbiased else " x ((n-1)/n)^(g+1)")
    checks = [
        Check(f"{what}: median sigma_g^2/sigma^2 at g={gens - 1}", median_se(_last(v)),
              float(med_ref[-1]), f"{src} (log-normal median); " + SHUMAILOV),
        Check(f"{what}: mean sigma_g^2/sigma^2 at g={gens - 1}", mean_se(_last(v)),
              float(mean_ref[-1]), "theory.gaussian_trace_ratio; " + SHUMAILOV),
    ]
    curves = [median_curve(v, "sigma_g^2 / sigma^2", "median", med_ref, log=True),
              mean_curve(v, "sigma_g^2 / sigma^2", "mean", mean_ref, log=True)]
    return checks, curves


def analyze_gmm(table, exp):
    """GMM: held-out NLL rises under replace; stays within 10% of generation 0 under accumulate."""
    checks, curves = [], []
    for regime in exp.regimes:
        v = per_seed(table, "nll", regime=regime)
        curves.append(mean_curve(v, "held-out NLL", regime, log=True))
        if regime == "replace":
            checks.append(Check(f"replace: NLL rise g=0 -> g={exp.generations - 1}",
                                mean_se(v[:, -1] - v[:, 0]), 0.0,
                                "Shumailov et al. 2024, Nature 631 (GMM: replace degrades)",
                                mode="greater"))
        if regime == "accumulate":
            checks.append(Check(f"accumulate: NLL g={exp.generations - 1} / NLL g=0 within 1.10",
                                ratio_se(v[:, -1], v[:, 0]), 1.10,
                                "Gerstgrasser et al. 2024 (accumulating avoids collapse); "
                                "band 10%", mode="at_most"))
    return checks, curves


def analyze_wright_fisher(table, exp):
    """Collapse time against the Wright-Fisher diffusion time; collision against Seddik et al."""
    n, k, gens = exp.n, exp.d, exp.generations
    s0 = T.categorical_s0("uniform", k, 1.0)
    rows = select(table, regime="replace")
    fc = first_collapse(rows, by=["seed"])["collapse_generation"].to_numpy()
    censored = int(np.sum(~np.isfinite(fc)))
    col = per_seed(table, "collision", regime="replace")
    gm = min(n // 2, gens - 1)
    ref = T.categorical_collision(n, s0, np.arange(gens))
    checks = [
        Check(f"mean rounds to one outcome (g_collapse + 1), K={k}, n={n}; {censored} chains "
              f"not collapsed by g={gens - 1}", mean_se(fc + 1.0),
              T.categorical_collapse_time(n, np.full(k, 1.0 / k)),
              "theory.categorical_collapse_time (Littler 1975 diffusion approximation; "
              "tolerance 10%)", rel_tol=0.10),
        Check(f"collision probability sum p^2 at g={gm}", mean_se(col[:, gm]), float(ref[gm]),
              "theory.categorical_collision; Seddik et al. 2024, arXiv:2404.05090"),
    ]
    return checks, [mean_curve(col, "collision probability", "replace", ref)]


def analyze_bertrand(table, exp):
    """fixed_real_mix: excess mean error over real data alone tends to lam / (1 + 2 lam)."""
    d, n0, s2, gens = exp.d, exp.n0 or exp.n, _sigma2(exp), exp.generations
    g = np.arange(gens)
    checks, curves = [], []
    for lam in np.atleast_1d(exp.hparams["lam"]):
        v = per_seed(table, "mean_error", regime="fixed_real_mix", lam=float(lam)) * n0 / (d * s2)
        ref = T.mixing_mean_error(d, s2, n0, float(lam), g) * n0 / (d * s2) - 1.0
        curves.append(mean_curve(v - 1.0, "n0 |mu_g - mu|^2 / (d sigma^2) - 1", f"lam={lam:g}",
                                 ref))
        checks.append(Check(f"lam={lam:g}: excess mean error at g={gens - 1} -> lam/(1+2 lam)"
                            f" = {lam / (1 + 2 * lam):.3f}", mean_se(v[:, -1] - 1.0),
                            float(ref[-1]), "theory.mixing_mean_error; Bertrand et al. 2024, "
                            "arXiv:2310.00429"))
    return checks, curves


def analyze_mad(table, exp):
    """Biased sampling (variance scale lambda): E trace ratio = q^t lambda^(t-1), t = g + 1."""
    n, gens = exp.n, exp.generations
    g = np.arange(gens)
    checks, curves = [], []
    for scale in np.atleast_1d(exp.hparams["scale"]):
        v = per_seed(table, "trace_ratio", regime="replace", scale=float(scale))
        ref = T.gaussian_trace_ratio("replace", n, g, scale=float(scale))
        curves.append(mean_curve(v, "trace ratio (replace)", f"lambda={scale:g}", ref, log=True))
        checks.append(Check(f"lambda={scale:g}: trace ratio at t={gens} = q^t lambda^(t-1)",
                            mean_se(_last(v)), float(ref[-1]),
                            "theory.gaussian_trace_ratio(scale); Alemohammad et al. 2023, "
                            "arXiv:2307.01850 (sampling bias)"))
    return checks, curves


def analyze_dey_donoho(table, exp):
    """Location estimate: Var ratio sum 1/j^2 -> pi^2/6 under accumulate, g + 1 under replace."""
    gens, est = exp.generations, exp.options.get("estimator", "mean")
    g = np.arange(gens)
    checks, curves = [], []
    for regime in exp.regimes:
        v = per_seed(table, "error", regime=regime)
        ref = T.location_variance_ratio(g) if regime == "accumulate" else g + 1.0
        base = np.nanmean(v[:, 0])
        curves.append(mean_curve(v / base, f"Var(theta_g) / Var(theta_0), {est}", regime, ref))
        law = "sum_{j<=g+1} 1/j^2" if regime == "accumulate" else "g + 1"
        checks.append(Check(f"{est}, {regime}: E err_{gens - 1} / E err_0 = {law}",
                            ratio_se(v[:, -1], v[:, 0]), float(ref[-1]),
                            "theory.location_variance_ratio; Dey & Donoho 2024, "
                            "arXiv:2410.22812" + (" (median: large-n limit)"
                                                  if est == "median" else "")))
    return checks, curves
