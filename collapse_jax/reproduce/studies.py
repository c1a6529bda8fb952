"""The curated studies of ``collapse-jax reproduce``, in report order.

Each runs a config of ``configs/`` with ``--set`` overrides (the report prints the exact
``collapse-jax run`` command); ``quick`` adds the smaller sizes of ``--quick``. The neural
studies are CPU-sized versions of the papers' experiments and are skipped under ``--quick``.
"""

from __future__ import annotations

from collapse_jax.config import ConfigError
from collapse_jax.reproduce import classical as C
from collapse_jax.reproduce.core import Study
from collapse_jax.reproduce.neural import qualitative

_LR = ("regimes=replace,accumulate", "x64=True", "sigma=1.0")

STUDIES: tuple[Study, ...] = (
    Study("linreg_gerstgrasser", "Linear regression: replace grows linearly, accumulate stays "
          "under pi^2/6 x the first error", C.GERSTGRASSER, "linear_regression",
          (*_LR, "d=8", "n=24", "seeds=2000", "generations=30"), ("seeds=500", "generations=10"),
          C.analyze_linreg, note="Fixed Gaussian design per chain, u = sigma^2 d / (T - d - 1)."),
    Study("linreg_paper", "Linear regression at the paper-figure parameters d=32, T=100, "
          "sigma^2=100", C.GERSTGRASSER, "linear_regression",
          ("regimes=replace,accumulate", "n=100", "d=32", "sigma=10.0", "seeds=1000",
           "generations=50"), ("seeds=200",), C.analyze_linreg_paper),
    Study("linreg_dohmatob", "Dohmatob et al.'s test error sigma^2 d/(T-d-1) + n sigma0^2 "
          "d/(T0-d-1) across d/T", "Dohmatob, Feng, Kempe 2024, arXiv:2402.07712",
          "linear_regression", ("regimes=replace", "x64=True", "sigma=1.0", "noise_ratio=1.0,2.0",
                                "d=8", "n=16,32,64", "seeds=2000", "generations=10"),
          ("seeds=500",), C.analyze_dohmatob, note="The synthetic rounds relabel the real design "
          "(T0 = T rows) with noise sigma0 = noise_ratio x sigma: the formula's sigma0 is checked "
          "at sigma0 = sigma and 2 sigma, its d/(T - d - 1) dependence across the swept T; T0 "
          "different from T is not simulated."),
    Study("linreg_exact", "Fixed-design exactness: finite-sample d/(T-d-1) at small T, not the "
          "proportional limit", C.GERSTGRASSER, "linear_regression",
          (*_LR, "d=4", "n=10", "seeds=20000", "generations=5"), ("seeds=5000",), C.analyze_exact,
          note="At d=4, T=10 the exact mean 0.8 sigma^2 and the asymptotic 0.667 sigma^2 are "
          "far apart; float64."),
    Study("kazdan_gaussian", "Gaussian: replace on its closed forms, accumulate bounded, "
          "accumulate_subsample in between", C.KAZDAN, "gaussian",
          ("n=32", "d=10", "seeds=1000", "generations=50"), ("seeds=500", "generations=20"),
          C.analyze_kazdan_gaussian),
    Study("kazdan_kde", "KDE on two moons: replace > accumulate_subsample > accumulate in "
          "held-out NLL", C.KAZDAN, "kde", ("n=100", "seeds=200", "generations=50"),
          ("seeds=50", "generations=20"), C.analyze_kazdan_kde),
    Study("kazdan_linreg", "Linear regression with accumulate_subsample", C.KAZDAN,
          "linear_regression", ("regimes=replace,accumulate,accumulate_subsample", "x64=True",
                                "sigma=1.0", "d=8", "n=24", "seeds=1000", "generations=30"),
          ("seeds=300", "generations=10"), C.analyze_kazdan_linreg),
    Study("shumailov_unbiased", "1-D Gaussian, unbiased variance (ddof 1): the mean stays 1, "
          "the median collapses", C.SHUMAILOV, "gaussian",
          ("regimes=replace", "d=1", "n=100", "options.unbiased=True", "seeds=4000",
           "generations=100"), ("seeds=1000",), C.analyze_shumailov,
          note="Medians are compared (THEORY.md): the mean of a product of random factors is "
          "heavy-tailed."),
    Study("shumailov_mle", "1-D Gaussian, MLE variance: mean q^(g+1) and median", C.SHUMAILOV,
          "gaussian", ("regimes=replace", "d=1", "n=100", "seeds=4000", "generations=100"),
          ("seeds=1000",), C.analyze_shumailov),
    Study("shumailov_gmm", "Gaussian mixture refit by EM: replace degrades, accumulate holds",
          "Shumailov et al. 2024, Nature 631 (GMM)", "gmm",
          ("regimes=replace,accumulate", "n=100", "seeds=40", "generations=20"),
          ("seeds=10", "generations=8"), C.analyze_gmm),
    Study("wright_fisher", "Categorical resampling: Wright-Fisher collapse time and Seddik et "
          "al.'s collision law", "Seddik et al. 2024; Littler 1975", "categorical",
          ("n=100", "seeds=500", "generations=1500"), ("n=20", "seeds=400", "generations=300"),
          C.analyze_wright_fisher),
    Study("bertrand_mixing", "Fixed real + lambda synthetic: excess mean error lam/(1+2 lam)",
          "Bertrand et al. 2024, arXiv:2310.00429", "mixing",
          ("regimes=fixed_real_mix", "lam=0.5,1.0,2.0", "lam_max=2.0", "seeds=2000",
           "generations=30"), ("seeds=500", "generations=15"), C.analyze_bertrand,
          note="Excess = n0 E|mu_g - mu|^2 / (d sigma^2) - 1, the error beyond the real data's."),
    Study("mad_sampling_bias", "Biased sampling: trace ratio q^t lambda^(t-1)",
          "Alemohammad et al. 2023, arXiv:2307.01850", "sampling_bias",
          ("regimes=replace", "scale=0.9,1.0", "seeds=2000", "generations=50"), ("seeds=500",),
          C.analyze_mad, note="t = g + 1 (the papers' iteration)."),
    Study("dey_donoho_mean", "Location (mean): accumulate variance ratio -> pi^2/6",
          "Dey & Donoho 2024, arXiv:2410.22812", "location",
          ("seeds=4000", "generations=30"), ("seeds=1000", "generations=15"),
          C.analyze_dey_donoho),
    Study("dey_donoho_median", "Location (median): the same pi^2/6 law (universality)",
          "Dey & Donoho 2024, arXiv:2410.22812", "location",
          ("options.estimator=median", "regimes=accumulate", "n=200", "seeds=2000",
           "generations=20"), ("seeds=500", "generations=10"), C.analyze_dey_donoho,
          note="The median's law is a large-n limit; n = 200 here."),
    Study("vae_digits", "VAE on 8x8 digits (CPU-sized)", "Gerstgrasser et al. 2024, sec. 4 "
          "(VAE on MNIST: +56% replace, +3% accumulate)", "vae_digits",
          ("seeds=4", "generations=5", "options.epochs=20"), (), qualitative(
              "neg_elbo", "Gerstgrasser et al. 2024 sec. 4 (qualitative)"), neural=True),
    Study("lm_tiny", "GPT-2-style LM on the King James Bible (CPU-sized)", "Gerstgrasser et al. "
          "2024, sec. 3 (TinyStories GPT-2 9M: 1.82 -> 2.50 replace, ~1.74 accumulate)",
          "lm_tiny", ("seeds=2", "generations=4", "n=128", "options.width=64", "options.depth=2"),
          (), qualitative("cross_entropy", "Gerstgrasser et al. 2024 sec. 3 (qualitative)"),
          neural=True),
    Study("conformer_diffusion", "EGNN diffusion on molecular conformers (CPU-sized)",
          "Gerstgrasser et al. 2024, sec. 5 (GeoDiff: 54.7 -> ~400 replace, 80-90 accumulate)",
          "diffusion_conformers", ("seeds=2", "generations=4", "options.steps=200"), (),
          qualitative("test_loss", "Gerstgrasser et al. 2024 sec. 5 (qualitative)"),
          neural=True),
)

NAMES = tuple(s.name for s in STUDIES)


def pick(only: str | None, studies: tuple[Study, ...] = STUDIES) -> list[Study]:
    """The studies ``--only NAME,...`` names (all when None), in report order.

    >>> [s.name for s in pick("linreg_exact,wright_fisher")]
    ['linreg_exact', 'wright_fisher']
    """
    if not only:
        return list(studies)
    names = [x.strip() for x in only.split(",") if x.strip()]
    known = {s.name for s in studies}
    bad = [x for x in names if x not in known]
    if bad or not names:
        raise ConfigError(f"--only {only!r}: unknown study {', '.join(bad) or '(none)'}; "
                          f"allowed: {', '.join(s.name for s in studies)}")
    return [s for s in studies if s.name in names]
