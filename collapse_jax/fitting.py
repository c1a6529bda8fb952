"""Shared fit loops: optax SGD over masked minibatches of the pool, as one ``lax.scan``.

``make_sgd_fit`` turns a loss ``(params, batch, key, hparams) -> scalar`` into a fit with the
model contract's signature, ``fit(key, pool, params, hparams) -> (params, FitInfo)``:

- every step draws a minibatch of ``batch`` indices uniformly (with replacement) from the VALID
  slots of the pool (``pool.sample_indices`` + ``pool.gather``: no boolean indexing, so invalid
  slots are never read whatever they hold);
- ``init_mode="reinit"`` draws fresh parameters from the fit key every generation;
  ``init_mode="warm"`` continues from the previous generation's parameters;
- ``budget="steps"`` runs exactly ``steps`` updates per generation (fixed compute);
  ``budget="epochs"`` runs ``ceil(epochs * count / batch)`` effective updates, where ``count`` is
  the number of valid pool slots (the paper's "one epoch per iteration"). Shapes stay static: the
  scan runs ``ceil(epochs * capacity / batch)`` steps and the steps past the effective number are
  masked no-ops (parameters and optimizer state are selected unchanged). ``FitInfo`` reports the
  wasted fraction of the scan.
- the learning rate is the traced hyperparameter ``hparams["lr"]`` fed to
  ``optax.inject_hyperparams``, so a vmapped sweep over it compiles once. The optimizer state
  lives only inside one fit (Adam moments restart every generation, also in warm mode).
- optimizers ``adam``, ``adamw`` (decoupled ``weight_decay``) and ``sgd``; an optional global
  gradient-norm clip (``clip_norm``); a per-generation learning-rate schedule over the
  EFFECTIVE steps of the fit: a linear warm-up over ``warmup`` steps, then ``constant`` or
  ``cosine`` decay to ``min_lr_ratio * lr`` at the last effective step (the usual recipe for
  pretraining transformer language models from scratch, one schedule per generation).

References:
    Gerstgrasser et al. 2024, "Is Model Collapse Inevitable?", arXiv:2404.01413 (one epoch per
        iteration; fresh vs continued training).
    Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization", arXiv:1412.6980.
    Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization", arXiv:1711.05101 (AdamW);
        2017, "SGDR: Stochastic Gradient Descent with Warm Restarts", arXiv:1608.03983 (cosine).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from collapse_jax.config import ConfigError
from collapse_jax.pool import Pool, gather, sample_indices
from collapse_jax.types import Array, Data, Hparams, Params, PRNGKey

if TYPE_CHECKING:
    import optax

INIT_MODES = ("reinit", "warm")
BUDGETS = ("steps", "epochs")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")

Loss = Callable[[Params, Data, PRNGKey, Hparams], Array]


class FitInfo(NamedTuple):
    """Diagnostics of one fit (fixed shapes; float32 / int32 scalars and one small vector).

    Attributes:
        losses: ``[max_steps]`` float32, the minibatch loss of every scan step (0 on no-op steps).
        active: ``[max_steps]`` bool, which scan steps updated the parameters.
        effective_steps: int32, number of updates applied.
        wasted_step_fraction: float32, share of the scan's steps that were masked no-ops.
        final_loss: float32, mean minibatch loss over the last tenth of the effective steps.
    """

    losses: Array
    active: Array
    effective_steps: Array
    wasted_step_fraction: Array
    final_loss: Array


class FitConfig(NamedTuple):
    """Static settings of the SGD fit.

    Attributes:
        batch: minibatch size.
        init_mode: ``"reinit"`` or ``"warm"``.
        budget: ``"steps"`` or ``"epochs"``.
        steps: updates per generation when ``budget == "steps"``.
        epochs: passes over the valid pool when ``budget == "epochs"`` (may be fractional).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (plain SGD makes update counts exactly
            testable).
        weight_decay: decoupled weight decay of ``adamw`` (ignored by the others).
        warmup: steps of linear learning-rate warm-up from 0 (clipped to the effective steps).
        schedule: ``"constant"``, or ``"cosine"`` decay after the warm-up to
            ``min_lr_ratio * lr`` at the last effective step.
        min_lr_ratio: final learning rate of the cosine schedule, as a fraction of ``lr``.
        clip_norm: clip gradients to this global L2 norm before the update (0: no clipping).
    """

    batch: int = 64
    init_mode: str = "reinit"
    budget: str = "steps"
    steps: int = 200
    epochs: float = 1.0
    optimizer: str = "adam"
    weight_decay: float = 0.0
    warmup: int = 0
    schedule: str = "constant"
    min_lr_ratio: float = 0.1
    clip_norm: float = 0.0


def check_fit_config(cfg: FitConfig) -> None:
    """Raise ``ConfigError`` naming the first bad field of ``cfg``."""
    if cfg.init_mode not in INIT_MODES:
        raise ConfigError(f"init_mode={cfg.init_mode!r}: allowed values are {list(INIT_MODES)}")
    if cfg.budget not in BUDGETS:
        raise ConfigError(f"budget={cfg.budget!r}: allowed values are {list(BUDGETS)}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer={cfg.optimizer!r}: allowed values are {list(OPTIMIZERS)}")
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"schedule={cfg.schedule!r}: allowed values are {list(SCHEDULES)}")
    for name in ("batch", "steps"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name}={v!r}: must be an integer >= 1")
    if isinstance(cfg.warmup, bool) or not isinstance(cfg.warmup, int) or cfg.warmup < 0:
        raise ConfigError(f"warmup={cfg.warmup!r}: must be an integer >= 0 (steps)")
    if isinstance(cfg.epochs, bool) or not isinstance(cfg.epochs, int | float) or cfg.epochs <= 0:
        raise ConfigError(f"epochs={cfg.epochs!r}: must be a number > 0")
    for name, lo, hi in (("weight_decay", 0.0, float("inf")), ("min_lr_ratio", 0.0, 1.0),
                         ("clip_norm", 0.0, float("inf"))):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise ConfigError(f"{name}={v!r}: must be a number in [{lo:g}, {hi:g}]")


def max_steps(cfg: FitConfig, capacity: int) -> int:
    """Static length of the scan: ``steps``, or ``ceil(epochs * capacity / batch)``.

    >>> max_steps(FitConfig(batch=8, budget="epochs", epochs=2.0), capacity=37)
    10
    """
    if cfg.budget == "steps":
        return cfg.steps
    e = _epochs(cfg)
    return max(1, -(-(e.numerator * capacity) // (e.denominator * cfg.batch)))


def _epochs(cfg: FitConfig) -> Fraction:
    """``epochs`` as the fraction the user wrote (0.1 -> 1/10), for exact step counts."""
    return Fraction(cfg.epochs).limit_denominator(1000)


def effective_steps(cfg: FitConfig, count: Array, capacity: int) -> Array:
    """Number of updates a fit applies for a pool with ``count`` valid slots (int32, traced)."""
    total = max_steps(cfg, capacity)
    if cfg.budget == "steps":
        return jnp.int32(total)
    # Integer arithmetic (exact): ceil(epochs * count / batch) with epochs = num / den.
    e = _epochs(cfg)
    num, den = e.numerator, e.denominator * cfg.batch
    if num * capacity + den > 2**31 - 1:  # pragma: no cover - astronomically large pools
        eff = jnp.ceil(jnp.float32(float(e)) * count.astype(jnp.float32) / cfg.batch)
        eff = eff.astype(jnp.int32)
    else:
        eff = (jnp.int32(num) * count + jnp.int32(den - 1)) // jnp.int32(den)
    return jnp.clip(eff, 1, total).astype(jnp.int32)


def _optimizer(cfg: FitConfig, lr: Array) -> optax.GradientTransformation:
    import optax  # loads with the first neural chain, not on import

    if cfg.optimizer == "adamw":
        tx = optax.inject_hyperparams(optax.adamw)(learning_rate=lr,
                                                   weight_decay=cfg.weight_decay)
    else:
        factory = optax.adam if cfg.optimizer == "adam" else optax.sgd
        tx = optax.inject_hyperparams(factory)(learning_rate=lr)
    if cfg.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx)
    return tx


def learning_rate(cfg: FitConfig, lr: Array, step: Array, n_eff: Array) -> Array:
    """The learning rate of scan step ``step`` of a fit with ``n_eff`` effective steps.

    A linear warm-up from ``lr / warmup`` over the first ``warmup`` steps (at most ``n_eff``),
    then ``lr`` (``constant``) or a cosine decay from ``lr`` to ``min_lr_ratio * lr`` at step
    ``n_eff - 1`` (``cosine``). With neither it is ``lr`` itself (bit for bit).

    >>> import jax.numpy as jnp
    >>> cfg = FitConfig(warmup=2, schedule="cosine", min_lr_ratio=0.0)
    >>> [round(float(learning_rate(cfg, jnp.float32(1.0), jnp.int32(i), jnp.int32(6))), 3)
    ...  for i in range(6)]
    [0.5, 1.0, 1.0, 0.75, 0.25, 0.0]
    """
    if cfg.warmup == 0 and cfg.schedule == "constant":
        return lr
    step = step.astype(jnp.float32)
    n_eff = n_eff.astype(jnp.float32)
    warm = jnp.minimum(jnp.float32(cfg.warmup), n_eff)
    scale = jnp.float32(1.0)
    if cfg.warmup > 0:
        scale = jnp.minimum((step + 1.0) / jnp.maximum(warm, 1.0), 1.0)
    if cfg.schedule == "cosine":
        span = jnp.maximum(n_eff - warm - 1.0, 1.0)
        frac = jnp.where(step < warm, 0.0, jnp.clip((step - warm) / span, 0.0, 1.0))
        cos = 0.5 * (1.0 + jnp.cos(jnp.float32(jnp.pi) * frac))
        scale = scale * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cos)
    return (lr * scale).astype(jnp.float32)


def _set_lr(cfg: FitConfig, state, lr: Array):
    """``state`` of ``_optimizer`` with its injected learning rate replaced by ``lr``."""
    if cfg.clip_norm > 0:
        clip_state, inner = state
        return (clip_state, inner._replace(hyperparams={**inner.hyperparams,
                                                        "learning_rate": lr}))
    return state._replace(hyperparams={**state.hyperparams, "learning_rate": lr})


def make_sgd_fit(
    cfg: FitConfig,
    loss_fn: Loss,
    init_params: Callable[[PRNGKey], Params],
) -> Callable[[PRNGKey, Pool, Params, Hparams], tuple[Params, FitInfo]]:
    """Build ``fit(key, pool, params, hparams) -> (params, FitInfo)``.

    Args:
        cfg: static settings (batch, init mode, budget).
        loss_fn: ``(params, batch_data, key, hparams) -> scalar`` on a minibatch (leaves
            ``[batch, ...]``); ``key`` is a fresh key for the step (e.g. reparameterisation noise).
        init_params: ``key -> params`` for ``init_mode="reinit"``.

    Returns:
        The fit. ``hparams["lr"]`` is the learning rate (a traced float32 scalar).
    """
    import optax  # loads with the first neural chain, not on import

    check_fit_config(cfg)
    grad_fn = jax.value_and_grad(loss_fn)

    def fit(key: PRNGKey, pool: Pool, params: Params, hparams: Hparams):
        capacity = pool.capacity
        total = max_steps(cfg, capacity)
        n_eff = effective_steps(cfg, pool.count, capacity)
        k_init, k_steps = jax.random.split(key)
        if cfg.init_mode == "reinit":
            params = init_params(k_init)
        lr = jnp.asarray(hparams["lr"], jnp.float32)
        tx = _optimizer(cfg, lr)
        opt_state = tx.init(params)

        def body(carry, i):
            p, s = carry
            # Step keys are derived by fold_in (scanning over a split key array trips JAX's key
            # reuse checker under vmap, a false positive).
            k_idx, k_loss = jax.random.split(jax.random.fold_in(k_steps, i))
            idx = sample_indices(k_idx, pool.valid, cfg.batch)
            loss, grads = grad_fn(p, gather(pool.data, idx), k_loss, hparams)
            # optax mixes Python floats with int32 step counts (Adam's bias correction): allow
            # standard promotion for the optimizer only, the rest stays strict.
            with jax.numpy_dtype_promotion("standard"):
                if cfg.warmup or cfg.schedule != "constant":
                    s = _set_lr(cfg, s, learning_rate(cfg, lr, i, n_eff))
                updates, s_new = tx.update(grads, s, p)
                p_new = optax.apply_updates(p, updates)
            active = i < n_eff
            if cfg.budget == "epochs":  # masked no-op steps past the effective number
                keep = lambda new, old: jnp.where(active, new, old)
                p_new = jax.tree.map(keep, p_new, p)
                s_new = jax.tree.map(keep, s_new, s)
            p, s = p_new, s_new
            return (p, s), (jnp.where(active, loss, 0.0).astype(jnp.float32), active)

        steps = jnp.arange(total, dtype=jnp.int32)
        (params, _), (losses, active) = jax.lax.scan(body, (params, opt_state), steps)
        tail = jnp.maximum(n_eff // 10, 1)
        in_tail = active & (steps >= n_eff - tail)
        final = jnp.sum(jnp.where(in_tail, losses, 0.0)) / tail.astype(jnp.float32)
        wasted = (jnp.int32(total) - n_eff).astype(jnp.float32) / jnp.float32(total)
        return params, FitInfo(losses, active, n_eff, wasted, final)

    return fit


FIT_DIAGNOSTICS = ("train_loss", "wasted_step_fraction", "effective_steps")


def make_net_init_fit(
    cfg: FitConfig,
    loss_fn: Loss,
    init_params: Callable[[PRNGKey], Params],
    diagnostics: tuple[str, ...] = FIT_DIAGNOSTICS,
):
    """A neural family's ``init`` and ``fit`` around ``make_sgd_fit``.

    Model parameters are ``{"net": params, "fit": {name: float32 scalar}}``: the network and
    the last fit's diagnostics (a subset of ``FIT_DIAGNOSTICS``, zeros before the first fit), so
    a family's ``evaluate`` can report them as metrics.

    Returns:
        ``(init(key, real, hparams), fit(key, pool, params, hparams))`` with the model
        contract's signatures.
    """
    unknown = sorted(set(diagnostics) - set(FIT_DIAGNOSTICS))
    if unknown:
        raise ValueError(f"diagnostics: unknown {unknown}; allowed: {list(FIT_DIAGNOSTICS)}")
    sgd_fit = make_sgd_fit(cfg, loss_fn, init_params)

    def init(key, real, hparams):
        del real, hparams
        return {"net": init_params(key),
                "fit": {name: jnp.float32(0.0) for name in diagnostics}}

    def fit(key, pool, params, hparams):
        net, info = sgd_fit(key, pool, params["net"], hparams)
        values = {"train_loss": info.final_loss,
                  "wasted_step_fraction": info.wasted_step_fraction,
                  "effective_steps": info.effective_steps.astype(jnp.float32)}
        return {"net": net, "fit": {name: values[name] for name in diagnostics}}

    return init, fit
