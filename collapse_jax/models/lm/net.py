"""A decoder-only causal transformer in flax ``nnx``: GPT-2 and Llama presets, tied embeddings.

- ``gpt2``: learned positions, pre-LayerNorm blocks (with biases), GELU MLP of width 4x.
- ``llama``: rotary positions (RoPE) on queries and keys, pre-RMSNorm blocks, SwiGLU MLP of
  width ~8/3x (rounded up to a multiple of 8), no biases.

Both tie the output projection to the token embedding (``logits = h @ E^T``). The full causal
forward computes attention with ``jax.nn.dot_product_attention`` (``[batch, time, heads,
head_dim]``); one decoding step uses two einsums over a head-major cache instead (see
``Attention.decode``). The
module is split once into a graphdef and a State of float32 arrays; callers ``nnx.merge`` them
inside pure functions, so the parameters are a plain pytree a sweep vmaps over chains. With
``dtype=bfloat16`` the matmuls and activations run in bfloat16 while the parameters, the norms'
statistics and the logits stay float32.

Two entry points share the weights: ``__call__`` (the full causal forward of ``[B, T]`` tokens,
training and evaluation) and ``decode_step`` (one position for ``[B]`` sequences against a
key/value cache ``[B, heads, context, head_dim]`` per layer, sampling). Decoding with the cache
gives the full forward's logits up to float rounding (tests/test_transformer_lm.py).

References:
    Vaswani et al. 2017, "Attention Is All You Need", arXiv:1706.03762.
    Radford et al. 2019, "Language Models are Unsupervised Multitask Learners" (GPT-2).
    Touvron et al. 2023, "Llama 2: Open Foundation and Fine-Tuned Chat Models",
        arXiv:2307.09288; Su et al. 2021, "RoFormer" (rotary positions), arXiv:2104.09864;
        Shazeer 2020, "GLU Variants Improve Transformer" (SwiGLU), arXiv:2002.05202;
        Zhang & Sennrich 2019, "Root Mean Square Layer Normalization", arXiv:1910.07467.
    Press & Wolf 2017, "Using the Output Embedding to Improve Language Models" (tied
        embeddings), arXiv:1608.05859.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from collapse_jax.models.lm.config import ARCHS, LMConfig, check_config  # noqa: F401 (re-exported)

#: Standard deviation of the initial weights (GPT-2); residual output projections are further
#: scaled by 1 / sqrt(2 depth) so the residual stream's variance does not grow with depth.
INIT_STD = 0.02
ROPE_BASE = 10000.0

Cache = tuple[tuple[jax.Array, jax.Array], ...]


def num_params(cfg: LMConfig) -> int:
    """Number of parameters (tied embedding counted once).

    >>> num_params(LMConfig("gpt2", 259, 128, 128, 4, 4))
    842880
    """
    _, state = nnx.split(nnx.eval_shape(lambda: TransformerLM(cfg, rngs=nnx.Rngs(0))))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(state))


def rope(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rotary positions: rotate the two halves of ``x [B, T, N, H]`` by ``positions [T]``."""
    half = x.shape[-1] // 2
    freq = ROPE_BASE ** (-jnp.arange(half, dtype=jnp.float32) / jnp.float32(half))
    angle = positions.astype(jnp.float32)[:, None] * freq[None, :]
    cos = jnp.cos(angle)[None, :, None, :].astype(x.dtype)
    sin = jnp.sin(angle)[None, :, None, :].astype(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def _attention(q: jax.Array, k: jax.Array, v: jax.Array, **kw) -> jax.Array:
    """``jax.nn.dot_product_attention``; in bfloat16 under standard dtype promotion, because it
    promotes its logits with float32 internally (an error under ``strict`` promotion)."""
    if q.dtype == jnp.float32:
        return jax.nn.dot_product_attention(q, k, v, **kw)
    with jax.numpy_dtype_promotion("standard"):
        return jax.nn.dot_product_attention(q, k, v, **kw)


class Attention(nnx.Module):
    """Causal multi-head self-attention (fused q, k, v projection)."""

    def __init__(self, cfg: LMConfig, *, rngs: nnx.Rngs):
        dt, bias = jnp.dtype(cfg.dtype), cfg.arch == "gpt2"
        self.cfg = cfg
        self.qkv = nnx.Linear(cfg.width, 3 * cfg.width, use_bias=bias, dtype=dt, rngs=rngs)
        self.proj = nnx.Linear(cfg.width, cfg.width, use_bias=bias, dtype=dt, rngs=rngs)

    def _qkv(self, x: jax.Array, positions: jax.Array):
        b, t, _ = x.shape
        q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
        shape = (b, t, self.cfg.heads, self.cfg.head_dim)
        q, k, v = q.reshape(shape), k.reshape(shape), v.reshape(shape)
        if self.cfg.arch == "llama":
            q, k = rope(q, positions), rope(k, positions)
        return q, k, v

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x [B, T, W] -> [B, T, W]``, position t attending to positions <= t."""
        b, t, w = x.shape
        q, k, v = self._qkv(x, jnp.arange(t, dtype=jnp.int32))
        y = _attention(q, k, v, is_causal=True)
        return self.proj(y.reshape(b, t, w))

    def decode(self, x: jax.Array, pos: jax.Array, cache: tuple[jax.Array, jax.Array]):
        """One position ``x [B, 1, W]`` at index ``pos`` (int32 scalar): write its key and
        value into ``cache`` (head-major, ``[B, N, context, H]`` each) and attend to the cached
        positions <= pos.

        Written as two einsums over the head-major cache rather than
        ``jax.nn.dot_product_attention`` (whose ``[B, T, N, H]`` layout makes XLA CPU transpose
        the whole cache at every step: 4-5x slower decoding, benchmarks/README.md); the same
        softmax attention, equal to the full forward to float rounding (tested).
        """
        b, _, w = x.shape
        q, k, v = self._qkv(x, pos[None])
        k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)  # [B, N, 1, H]
        ck = jax.lax.dynamic_update_slice_in_dim(cache[0], k.astype(cache[0].dtype), pos, 2)
        cv = jax.lax.dynamic_update_slice_in_dim(cache[1], v.astype(cache[1].dtype), pos, 2)
        scale = jnp.float32(1.0 / math.sqrt(self.cfg.head_dim))
        logits = jnp.einsum("bnh,bnsh->bns", q[:, 0], ck.astype(q.dtype),
                            preferred_element_type=jnp.float32) * scale
        visible = (jnp.arange(ck.shape[2], dtype=jnp.int32) <= pos)[None, None, :]
        probs = jax.nn.softmax(jnp.where(visible, logits, jnp.float32(-jnp.inf)), axis=-1)
        y = jnp.einsum("bns,bnsh->bnh", probs.astype(q.dtype), cv.astype(q.dtype))
        return self.proj(y.reshape(b, 1, w)), (ck, cv)


class MLP(nnx.Module):
    """GELU MLP (``gpt2``) or SwiGLU (``llama``)."""

    def __init__(self, cfg: LMConfig, *, rngs: nnx.Rngs):
        dt, bias, h = jnp.dtype(cfg.dtype), cfg.arch == "gpt2", cfg.mlp_width
        self.arch = cfg.arch
        self.up = nnx.Linear(cfg.width, h, use_bias=bias, dtype=dt, rngs=rngs)
        if cfg.arch == "llama":
            self.gate = nnx.Linear(cfg.width, h, use_bias=False, dtype=dt, rngs=rngs)
        self.down = nnx.Linear(h, cfg.width, use_bias=bias, dtype=dt, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.arch == "llama":
            return self.down(jax.nn.silu(self.gate(x)) * self.up(x))
        return self.down(jax.nn.gelu(self.up(x), approximate=True))


class Norm(nnx.Module):
    """LayerNorm (``gpt2``) or RMSNorm (``llama``) computed in float32 whatever the compute
    dtype; the output is cast back to the input's dtype."""

    def __init__(self, cfg: LMConfig, *, rngs: nnx.Rngs):
        cls = nnx.RMSNorm if cfg.arch == "llama" else nnx.LayerNorm
        self.norm = cls(cfg.width, epsilon=1e-5, dtype=jnp.float32, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.norm(x.astype(jnp.float32)).astype(x.dtype)


class Block(nnx.Module):
    """Pre-norm residual block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, cfg: LMConfig, *, rngs: nnx.Rngs):
        self.norm1 = Norm(cfg, rngs=rngs)
        self.attn = Attention(cfg, rngs=rngs)
        self.norm2 = Norm(cfg, rngs=rngs)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def decode(self, x, pos, cache):
        a, cache = self.attn.decode(self.norm1(x), pos, cache)
        x = x + a
        return x + self.mlp(self.norm2(x)), cache


class TransformerLM(nnx.Module):
    """Token embedding (+ learned positions for ``gpt2``), ``depth`` blocks, final norm, tied
    output projection."""

    def __init__(self, cfg: LMConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = nnx.Embed(cfg.vocab, cfg.width, dtype=jnp.dtype(cfg.dtype), rngs=rngs)
        if cfg.arch == "gpt2":
            self.pos = nnx.Param(jnp.zeros((cfg.context, cfg.width), jnp.float32))
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.depth)])
        self.norm = Norm(cfg, rngs=rngs)

    def _embed(self, tokens: jax.Array, positions: jax.Array) -> jax.Array:
        x = self.embed(tokens)
        if self.cfg.arch == "gpt2":
            x = x + self.pos[...][positions][None].astype(x.dtype)
        return x

    def _logits(self, x: jax.Array) -> jax.Array:
        return self.embed.attend(self.norm(x)).astype(jnp.float32)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """``tokens [B, T]`` int32 (T <= context) -> logits ``[B, T, vocab]`` float32."""
        x = self._embed(tokens, jnp.arange(tokens.shape[1], dtype=jnp.int32))
        for block in self.blocks:
            x = block(x)
        return self._logits(x)

    def decode_step(self, token: jax.Array, pos: jax.Array, cache: Cache):
        """Logits ``[B, vocab]`` (float32) of the next token after ``token [B]`` at position
        ``pos``, and the cache with that position's keys and values written."""
        x = self._embed(token[:, None], pos[None])
        new = []
        for block, c in zip(self.blocks, cache, strict=True):
            x, c = block.decode(x, pos, c)
            new.append(c)
        return self._logits(x)[:, 0], tuple(new)


def empty_cache(cfg: LMConfig, batch: int) -> Cache:
    """Zero key/value caches ``[batch, heads, context, head_dim]`` per layer (compute dtype)."""
    shape = (batch, cfg.heads, cfg.context, cfg.head_dim)
    z = jnp.zeros(shape, jnp.dtype(cfg.dtype))
    return tuple((z, z) for _ in range(cfg.depth))


def split_module(cfg: LMConfig) -> tuple[nnx.GraphDef, nnx.State]:
    """``(graphdef, abstract State)`` of the network: shapes only, nothing initialised."""
    return nnx.split(nnx.eval_shape(lambda: TransformerLM(cfg, rngs=nnx.Rngs(0))))


def _leaf_std(path: tuple, depth: int) -> float | None:
    """Initial std of a parameter by its path (None: a constant, 1 for scales, 0 for biases)."""
    names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    last = next(n for n in reversed(names) if n not in ("value", None))
    if last in ("bias", "scale"):
        return None
    std = INIT_STD
    if last == "kernel" and ("proj" in names or "down" in names):
        std /= math.sqrt(2.0 * depth)
    return std


def init_state(key: jax.Array, abstract: nnx.State, depth: int) -> nnx.State:
    """Fresh float32 parameters: normal(0, 0.02) weights and embeddings (residual projections
    scaled by 1/sqrt(2 depth), as GPT-2), ones for norm scales, zeros for biases.

    One normal draw for every weight (cheaper to compile than one initializer per layer; the
    same distribution).
    """
    paths, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    stds = [_leaf_std(p, depth) for p, _ in paths]
    sizes = [math.prod(x.shape) if s is not None else 0 for (_, x), s in zip(paths, stds,
                                                                            strict=True)]
    z = jax.random.normal(key, (max(sum(sizes), 1),), jnp.float32)
    out, start = [], 0
    for (path, x), std, size in zip(paths, stds, sizes, strict=True):
        if std is not None:
            out.append(z[start:start + size].reshape(x.shape) * jnp.float32(std))
            start += size
        else:
            is_scale = getattr(path[-2] if len(path) > 1 else path[-1], "key", None) == "scale"
            out.append(jnp.full(x.shape, 1.0 if is_scale else 0.0, jnp.float32))
    return jax.tree.unflatten(treedef, out)
