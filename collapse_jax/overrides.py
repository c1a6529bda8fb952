"""``--set key=value``: overriding an experiment's fields, hyperparameters and options by name.

Values are Python literals (``10``, ``1e-3``, ``True``, ``'a'``) or comma lists (``10,32,100``: a
sweep). ``regime=replace`` sets the regimes; ``hparams.sigma=3`` (or just ``sigma=3`` when
unambiguous) sets a hyperparameter; ``options.unbiased=True`` an option. Unknown keys raise
``ConfigError`` with a did-you-mean; values are checked later by ``validate``.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from collapse_jax.config import ConfigError, Experiment
from collapse_jax.model import MODELS
from collapse_jax.validate import did_you_mean, known_hparams, known_options


def override(exp: Experiment, assignments: Sequence[str]) -> Experiment:
    """Apply ``key=value`` strings (the CLI's ``--set``) to ``exp``.

    >>> e = override(Experiment(name="x", model="gaussian"), ["seeds=4", "n=10,32"])
    >>> e.seeds, e.n
    (4, (10, 32))
    >>> override(Experiment(name="x", model="gaussian"), ["hparams.sigmaa=2"])
    Traceback (most recent call last):
    ...
    collapse_jax.config.ConfigError: --set hparams.sigmaa=2: unknown key (did you mean 'hparams.sigma'?); known keys: ...
    """  # noqa: E501
    fields = {f.name for f in dataclasses.fields(exp)}
    for item in assignments:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value (e.g. seeds=10)")
        key, raw = item.split("=", 1)
        key, raw = key.strip(), raw.strip()
        value = parse_value(raw)
        if key == "regime":
            key = "regimes"
        if key in ("regimes", "metrics") and not isinstance(value, tuple):
            value = (value,)
        hp, opts = known_hparams(exp), known_options(exp)
        group, _, sub = key.partition(".")
        if group in ("hparams", "options") and sub:
            current = getattr(exp, group)
            if not isinstance(current, Mapping):
                raise ConfigError(f"{group}={current!r}: must be a dict of name -> value")
            allowed = hp if group == "hparams" else opts
            if exp.model in MODELS and sub not in allowed:
                raise _unknown_key(item, key, fields, hp, opts)
            exp = dataclasses.replace(exp, **{group: {**current, sub: value}})
        elif key in fields:
            exp = dataclasses.replace(exp, **{key: value})
        elif key in hp and isinstance(exp.hparams, Mapping):
            exp = dataclasses.replace(exp, hparams={**exp.hparams, key: value})
        elif key in opts and isinstance(exp.options, Mapping):
            exp = dataclasses.replace(exp, options={**exp.options, key: value})
        else:
            raise _unknown_key(item, key, fields, hp, opts)
    return exp


def _unknown_key(item: str, key: str, fields, hp, opts) -> ConfigError:
    known = sorted(fields | {"regime"}) + [f"hparams.{k}" for k in sorted(hp)] + [
        f"options.{k}" for k in sorted(opts)]
    candidates = known + sorted(hp) + sorted(opts)
    return ConfigError(f"--set {item}: unknown key{did_you_mean(key, candidates)}; "
                       f"known keys: {', '.join(known)}")


def parse_value(raw: str) -> Any:
    """Parse a ``--set`` value: a Python literal, a comma list (tuple), or a bare string.

    >>> parse_value("10,32"), parse_value("1e-3"), parse_value("replace")
    ((10, 32), 0.001, 'replace')
    """
    raw = raw.strip()
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        if "," in raw:
            return tuple(parse_value(p) for p in raw.split(",") if p.strip())
        return raw
    if isinstance(value, list):
        value = tuple(value)
    return value
