"""The transformer language model's static shape (``LMConfig``) and its checks: what the
family's registration and option checks need, without importing flax (the network is in
``net``, imported when a chain is built)."""

from __future__ import annotations

import math
from typing import NamedTuple

ARCHS = ("gpt2", "llama")


class LMConfig(NamedTuple):
    """Static shape of the network.

    Attributes:
        arch: ``"gpt2"`` or ``"llama"``.
        vocab: vocabulary size (specials included).
        context: context length in tokens (learned positions of ``gpt2``).
        width: model width; ``heads`` must divide it (even head dimension for ``llama``).
        depth: number of blocks.
        heads: attention heads.
        dtype: compute dtype name, ``"float32"`` or ``"bfloat16"``.
    """

    arch: str
    vocab: int
    context: int
    width: int
    depth: int
    heads: int
    dtype: str = "float32"

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def mlp_width(self) -> int:
        if self.arch == "gpt2":
            return 4 * self.width
        return 8 * math.ceil(8 * self.width / 3 / 8)


def check_config(cfg: LMConfig) -> str | None:
    """A one-line problem with ``cfg`` (naming the option), or None.

    >>> check_config(LMConfig("gpt2", 259, 64, 48, 2, 5))
    'options.heads=5: must divide options.width=48'
    """
    if cfg.arch not in ARCHS:
        return f"options.arch={cfg.arch!r}: allowed values are {list(ARCHS)}"
    if cfg.width % cfg.heads:
        return f"options.heads={cfg.heads}: must divide options.width={cfg.width}"
    if cfg.arch == "llama" and cfg.head_dim % 2:
        return (f"options.heads={cfg.heads}: llama's rotary positions need an even head "
                f"dimension (width / heads = {cfg.head_dim})")
    return None
