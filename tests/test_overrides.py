"""``--set key=value`` overrides (``collapse_jax.overrides``): an unknown key is one line with a
did-you-mean (``BAD_SETS``: ``python tests/test_overrides.py`` prints each with its message); the
values are checked by ``validate``; fields, hyperparameters, options and x64 are set.
"""

from __future__ import annotations

import pytest

import collapse_jax as cj
from collapse_jax.config import ConfigError, Experiment
from collapse_jax.validate import validate

GAUSS = Experiment(name="v", model="gaussian", regimes=("replace",), seeds=2, generations=3,
                   n=8, d=2, n_test=8)


def _assert_one_line(msg: str, fragments) -> None:
    """A one-line message containing every fragment."""
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"


# (id, --set items, fragments)
BAD_SETS = [
    ("unknown-key", ["seedz=3"], ["--set seedz=3", "did you mean 'seeds'", "known keys:"]),
    ("unknown-hparam-prefixed", ["hparams.sigmaa=2"], ["did you mean 'hparams.sigma'"]),
    ("unknown-option-prefixed", ["options.unbiassed=True"], ["did you mean 'options.unbiased'"]),
    ("misspelt-prefix", ["hparam.sigma=2"], ["did you mean 'hparams.sigma'"]),
    ("unknown-bare-hparam", ["sigmaa=1"], ["did you mean 'sigma'"]),
    ("no-equals", ["seeds"], ["--set 'seeds'", "expected key=value"]),
]


@pytest.mark.parametrize("items,fragments", [c[1:] for c in BAD_SETS],
                         ids=[c[0] for c in BAD_SETS])
def test_bad_override_is_one_line_with_did_you_mean(items, fragments):
    with pytest.raises(ConfigError) as info:
        cj.override(GAUSS, items)
    _assert_one_line(str(info.value), fragments)


@pytest.mark.parametrize("items,fragments", [
    (["seeds=ten"], ["seeds='ten'"]),
    (["n=1.5"], ["n=1.5"]),
    (["hparams.sigma=-1"], ["hparams.sigma=-1", "(0, inf)"]),
    (["sigma=abc"], ["hparams.sigma='abc'"]),
    (["regime=replace,bogus"], ["regime='bogus'"]),
    (["x64=maybe"], ["x64='maybe'"]),
])
def test_override_values_are_checked_by_validate(items, fragments):
    exp = cj.override(GAUSS, items)
    with pytest.raises(ConfigError) as info:
        validate(exp)
    for f in fragments:
        assert f in str(info.value)


def test_override_sets_fields_hparams_options_and_x64():
    exp = cj.override(GAUSS, ["regime=replace,accumulate", "sigma=2", "options.unbiased=True",
                          "hparams.scale=0.5,1", "x64=True"])
    assert exp.regimes == ("replace", "accumulate") and exp.x64 is True
    assert exp.hparams == {"sigma": 2, "scale": (0.5, 1)} and exp.options == {"unbiased": True}
    validate(exp)


if __name__ == "__main__":  # the closing note: every bad --set and the message it produced
    for _name, items, _ in BAD_SETS:
        try:
            cj.override(GAUSS, items)
        except ConfigError as e:
            print(f"| `--set {' '.join(items)}` | {e} |")
