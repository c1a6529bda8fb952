"""collapse_jax: a JAX simulation engine for model collapse.

Read ``pool.py -> regimes.py -> model.py -> chain.py -> sweep.py`` for the whole engine; the
README's "Architecture" section maps every module.
"""

from collapse_jax._xla import apply_cpu_defaults as _apply_cpu_defaults

_apply_cpu_defaults()  # before anything computes: an XLA CPU deadlock workaround (see _xla.py)


from collapse_jax import data as _data  # noqa: F401  (registers the real-data sources)
from collapse_jax import models as _models  # noqa: F401  (registers the model families)
from collapse_jax.chain import (
    Chain,
    ChainState,
    advance,
    draw_real,
    init,
    make_chain,
    run_chain,
    step,
)
from collapse_jax.config import ConfigError, Experiment, StaticConfig, hparams_from
from collapse_jax.experiment import run_experiment
from collapse_jax.model import (
    MODELS,
    SOURCES,
    GenerativeModel,
    Source,
    lazy_factory,
    make_model,
    make_source,
    register_model,
    register_source,
)
from collapse_jax.overrides import override
from collapse_jax.pool import Pool, init_pool
from collapse_jax.programs import clear_caches
from collapse_jax.regimes import (
    REGIMES,
    Regime,
    accumulate,
    accumulate_subsample,
    make_regime,
    replace,
)
from collapse_jax.results import Results
from collapse_jax.sweep import SweepResult, run_sweep
from collapse_jax.types import RealData
from collapse_jax.validate import RunSpec, resolve, validate

__version__ = "0.1.0"

__all__ = [
    "Chain",
    "ChainState",
    "ConfigError",
    "Experiment",
    "GenerativeModel",
    "MODELS",
    "Pool",
    "REGIMES",
    "RealData",
    "Regime",
    "Results",
    "RunSpec",
    "SOURCES",
    "Source",
    "StaticConfig",
    "SweepResult",
    "accumulate",
    "accumulate_subsample",
    "advance",
    "clear_caches",
    "draw_real",
    "hparams_from",
    "init",
    "init_pool",
    "lazy_factory",
    "make_chain",
    "make_model",
    "make_regime",
    "make_source",
    "override",
    "register_model",
    "register_source",
    "replace",
    "resolve",
    "run_chain",
    "run_experiment",
    "run_sweep",
    "step",
    "validate",
]
