"""Sampling documents from the language model: a fixed-length ``lax.scan`` with a KV cache.

Every sample is a full context row: ``tokens[0] = BOS``, then one token per scan step
(``context - 1`` steps, no Python loop per token and no data-dependent ``while_loop``, so it
vmaps over chains). Once a sample has produced EOS its later tokens are PAD (masking, not an
early exit); its length counts BOS, content and EOS. BOS and PAD are never sampled.

Start modes (static option ``start``):

- ``bos_fixed_length``: start from BOS alone and sample the whole document.
- ``first_token_inclusive``: start from BOS and the first content token of a real training
  document (of the chain's D0, chosen uniformly at random), then sample the rest; the first
  token is part of the sample.

Sampling distribution (traced float32 hyperparameters, so a sweep over them never recompiles):
logits divided by ``temperature`` (``0`` = greedy argmax, exactly), restricted to the ``top_k``
most likely tokens (``0`` = no limit) and to the smallest set of most likely tokens whose
probability reaches ``top_p`` (nucleus; ``1`` = no limit); the most likely token is always
allowed (tokens tied with a threshold are kept). A draw is the Gumbel-max trick over the
allowed tokens.

References:
    Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration" (nucleus sampling),
        arXiv:1904.09751. Fan et al. 2018, "Hierarchical Neural Story Generation" (top-k),
        arXiv:1805.04833.
    Gumbel 1954; Maddison et al. 2014, "A* Sampling" (the Gumbel-max trick), arXiv:1411.0030.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

START_MODES = ("bos_fixed_length", "first_token_inclusive")

#: ``(token [B], pos, cache) -> (logits [B, V] float32, cache)``: one decoding step.
StepFn = Callable[[jax.Array, jax.Array, object], tuple[jax.Array, object]]


class Specials(NamedTuple):
    """Special token ids (static)."""

    bos: int
    eos: int
    pad: int


def _hp(hparams, name: str, default: float) -> jax.Array:
    return jnp.asarray(hparams.get(name, default), jnp.float32)


def _order_key(x: jax.Array) -> jax.Array:
    """uint32 keys ordered as the float32 values ``x`` (IEEE bits, negatives flipped)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    sign = bits >> jnp.uint32(31)
    return jnp.where(sign == 1, ~bits, bits | jnp.uint32(0x80000000))


def _largest_key(keys: jax.Array, enough: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """Per row of ``keys [B, V]`` (uint32), the largest threshold ``c`` with ``enough(keys >=
    c)`` true: 32 steps of a bitwise binary search (exact; ``enough`` must be monotone: true
    for every smaller threshold)."""
    def body(i, best):
        cand = best | (jnp.uint32(1) << (jnp.uint32(31) - i.astype(jnp.uint32)))
        return jnp.where(enough(keys >= cand[:, None]), cand, best)

    # a rolled loop: 32 unrolled passes made the decoding scan's body (and its compile) larger
    return jax.lax.fori_loop(0, 32, body, jnp.zeros(keys.shape[:1], jnp.uint32))


def allowed_tokens(logits: jax.Array, temperature: jax.Array, top_k: jax.Array,
                   top_p: jax.Array) -> jax.Array:
    """Which tokens the sampler may draw: ``[B, V]`` bool.

    ``logits [B, V]`` (float32; ``-inf`` = never). Top-k keeps the tokens whose logit is at
    least the ``top_k``-th largest (``top_k <= 0``: all); top-p (nucleus) keeps the most likely
    tokens, in order, while the probability mass before them (at this temperature) is below
    ``top_p`` (``top_p >= 1``: all): the smallest such set whose mass reaches ``top_p``. Both
    thresholds come from an exact binary search over the float bits (``_largest_key``, 2 x 32
    vectorised passes over the vocabulary; a sort is 10x slower on CPU inside the decoding
    scan). Tokens tied with a threshold are all kept.

    >>> import jax.numpy as jnp
    >>> lg = jnp.log(jnp.array([[0.1, 0.5, 0.15, 0.25]]))
    >>> allowed_tokens(lg, jnp.float32(1), jnp.float32(0), jnp.float32(0.7)).astype(int).tolist()
    [[0, 1, 0, 1]]
    >>> allowed_tokens(lg, jnp.float32(1), jnp.float32(3), jnp.float32(1)).astype(int).tolist()
    [[0, 1, 1, 1]]
    """
    finite = jnp.isfinite(logits)
    keys = _order_key(logits)
    k = jnp.maximum(top_k, 1.0)
    kth = _largest_key(keys, lambda m: jnp.sum(m & finite, axis=-1, dtype=jnp.float32) >= k)
    keep_k = (top_k <= 0) | (keys >= kth[:, None])
    t = jnp.maximum(temperature, jnp.float32(1e-6))
    probs = jax.nn.softmax(logits / t, axis=-1)
    pkeys = jax.lax.bitcast_convert_type(probs, jnp.uint32)  # probs >= 0: bits are ordered
    mass = lambda m: jnp.sum(jnp.where(m, probs, 0.0), axis=-1) >= jnp.minimum(top_p, 1.0)
    tau = _largest_key(pkeys, mass)
    keep_p = (top_p >= 1) | (pkeys >= tau[:, None])
    top = keys == jnp.max(keys, axis=-1, keepdims=True)
    return ((keep_k & keep_p) | top) & finite


def choose(key: jax.Array, logits: jax.Array, hparams) -> jax.Array:
    """One token per row of ``logits [B, V]`` under ``temperature``, ``top_k``, ``top_p``.

    ``temperature == 0`` gives the argmax of the logits (greedy) exactly.
    """
    temperature = _hp(hparams, "temperature", 1.0)
    keep = allowed_tokens(logits, temperature, _hp(hparams, "top_k", 0.0),
                          _hp(hparams, "top_p", 1.0))
    neg = jnp.float32(-jnp.inf)
    greedy = jnp.argmax(jnp.where(keep, logits, neg), axis=-1)
    g = jax.random.gumbel(key, logits.shape, jnp.float32)
    scaled = logits / jnp.maximum(temperature, jnp.float32(1e-30))
    sampled = jnp.argmax(jnp.where(keep, scaled + g, neg), axis=-1)
    return jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32)


def decode(step: StepFn, cache, key: jax.Array, prefix: jax.Array, hparams,
           specials: Specials, context: int) -> dict[str, jax.Array]:
    """Sample continuations of ``prefix [B, P]`` (static P >= 1, starting with BOS) to full
    context rows.

    Args:
        step: one decoding step with the network's weights bound (see ``StepFn``).
        cache: the empty KV cache for ``B`` rows.
        key: randomness of this batch (step ``t`` uses ``fold_in(key, t)``).
        prefix: forced first tokens (BOS, or BOS and a first content token).
        hparams: ``temperature``, ``top_k``, ``top_p`` (float32 scalars).
        specials: BOS / EOS / PAD ids.
        context: row length.

    Returns:
        ``{"tokens": [B, context] int32, "length": [B] int32}``.
    """
    b, p = prefix.shape
    forced = jnp.full((b, context), specials.pad, jnp.int32).at[:, :p].set(prefix)

    def body(carry, t):
        cache, token, done = carry
        logits, cache = step(token, t, cache)
        v = logits.shape[-1]
        ids = jnp.arange(v, dtype=jnp.int32)[None, :]
        banned = (ids == specials.bos) | (ids == specials.pad)
        logits = jnp.where(banned, jnp.float32(-jnp.inf), logits)
        sampled = choose(jax.random.fold_in(key, t), logits, hparams)
        nxt = jnp.where(t + 1 < p, jax.lax.dynamic_index_in_dim(forced, t + 1, 1, False),
                        sampled)
        nxt = jnp.where(done, jnp.int32(specials.pad), nxt)
        done = done | (nxt == specials.eos)
        return (cache, nxt, done), nxt

    start = (cache, forced[:, 0], forced[:, 0] == specials.eos)
    steps = jnp.arange(context - 1, dtype=jnp.int32)
    _, out = jax.lax.scan(body, start, steps)
    tokens = jnp.concatenate([forced[:, :1], out.T], axis=1)
    length = jnp.sum(tokens != specials.pad, axis=1, dtype=jnp.int32)
    return {"tokens": tokens, "length": length}


def start_prefix(key: jax.Array, mode: str, real_train: dict, num: int,
                 specials: Specials) -> jax.Array:
    """The forced prefix of ``num`` samples: ``[num, 1]`` BOS, or ``[num, 2]`` BOS and the
    first content token of uniformly chosen real training documents."""
    bos = jnp.full((num, 1), specials.bos, jnp.int32)
    if mode == "bos_fixed_length":
        return bos
    n0 = real_train["tokens"].shape[0]
    idx = jax.random.randint(key, (num,), 0, n0, dtype=jnp.int32)
    first = real_train["tokens"][idx, 1]
    return jnp.concatenate([bos, first[:, None]], axis=1)


def decode_batched(step: StepFn, make_cache: Callable[[int], object], key: jax.Array,
                   prefix: jax.Array, hparams, specials: Specials, context: int,
                   batch: int) -> dict[str, jax.Array]:
    """``decode`` over ``num`` rows in sequential chunks of at most ``batch`` rows (``lax.map``;
    the KV cache holds one chunk), so memory does not grow with ``num``."""
    num = prefix.shape[0]
    size = min(batch, num)
    chunks = -(-num // size)
    padded = jnp.concatenate(
        [prefix, jnp.broadcast_to(prefix[:1], (chunks * size - num, prefix.shape[1]))], axis=0)

    def one(args):
        i, pre = args
        return decode(step, make_cache(size), jax.random.fold_in(key, i), pre, hparams,
                      specials, context)

    out = jax.lax.map(one, (jnp.arange(chunks, dtype=jnp.int32),
                            padded.reshape(chunks, size, -1)))
    return jax.tree.map(lambda x: x.reshape(chunks * size, *x.shape[2:])[:num], out)
