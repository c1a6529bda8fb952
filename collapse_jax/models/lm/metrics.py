"""Language-model metrics: held-out cross-entropy, and the diversity of generated documents.

Documents are ``{"tokens": [N, context] int32, "length": [N] int32}`` rows (BOS, content, EOS,
PAD). Every function here is pure jnp with static shapes (vmappable over chains).

- Cross-entropy (nats/token) of held-out real text: the mean negative log-likelihood of every
  target token of every document (content tokens and EOS, each predicted from its prefix),
  token-weighted over the set; perplexity ``exp(cross_entropy)``; bits per byte: the same total
  NLL in bits divided by the UTF-8 bytes of the documents (comparable across tokenizers).
- Of generated documents (content = tokens other than BOS / EOS / PAD): distinct-n, the number
  of distinct n-grams over the number of n-grams (n-grams within one document's content, pooled
  over documents; Li et al. 2016); the unigram entropy of the pooled content tokens (nats);
  mean length (content tokens per document); the share of documents that ended with EOS; the
  share that repeat a real training document verbatim (same tokens, EOS included).

References:
    Li et al. 2016, "A Diversity-Promoting Objective Function for Neural Conversation Models"
        (distinct-n), arXiv:1510.03055.
    Gao et al. 2020, "The Pile" (bits per byte across tokenizers), arXiv:2101.00027.
    Shumailov et al. 2024, "AI models collapse when trained on recursively generated data",
        Nature 631 (tails of the token distribution vanish under replacement).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

#: ``tokens [B, T] -> logits [B, T, V]`` float32.
Forward = Callable[[jax.Array], jax.Array]


def target_mask(length: jax.Array, context: int) -> jax.Array:
    """``[N, context - 1]`` bool: which next-token targets ``tokens[:, 1:]`` are real (not PAD).

    >>> target_mask(jnp.array([3, 1]), 4).astype(int).tolist()
    [[1, 1, 0], [0, 0, 0]]
    """
    return jnp.arange(context - 1, dtype=jnp.int32)[None, :] < (length - 1)[:, None]


def token_nll(forward: Forward, docs: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """``(sum of target NLLs, number of targets)`` of ``docs`` (float32 scalars)."""
    tokens, length = docs["tokens"], docs["length"]
    logits = forward(tokens[:, :-1])
    targets = tokens[:, 1:]
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    mask = target_mask(length, tokens.shape[1])
    nll = jnp.where(mask, lse - picked, jnp.float32(0.0))
    return jnp.sum(nll), jnp.sum(mask, dtype=jnp.float32)


def mean_nll(forward: Forward, docs: dict[str, jax.Array]) -> jax.Array:
    """Token-weighted mean NLL (nats) of ``docs``: the training loss of a minibatch."""
    total, count = token_nll(forward, docs)
    return total / jnp.maximum(count, jnp.float32(1.0))


def chunked_nll(forward: Forward, docs: dict[str, jax.Array], batch: int
                ) -> tuple[jax.Array, jax.Array]:
    """``token_nll`` over ``N`` documents in sequential chunks of ``batch`` (``lax.map``), so
    the ``[batch, context, V]`` logits, not ``[N, context, V]``, are alive at once. ``N`` is
    padded up to a multiple of ``batch`` with empty documents (length 0: no targets)."""
    n = docs["length"].shape[0]
    size = min(batch, n)
    chunks = -(-n // size)
    pad = chunks * size - n
    tokens = jnp.pad(docs["tokens"], ((0, pad), (0, 0)))
    length = jnp.pad(docs["length"], (0, pad))

    def one(chunk):
        return token_nll(forward, {"tokens": chunk[0], "length": chunk[1]})

    totals, counts = jax.lax.map(one, (tokens.reshape(chunks, size, -1),
                                       length.reshape(chunks, size)))
    return jnp.sum(totals), jnp.sum(counts)


def content_mask(tokens: jax.Array, bos: int, eos: int, pad: int) -> jax.Array:
    """``[N, T]`` bool: content tokens (not BOS / EOS / PAD)."""
    return (tokens != bos) & (tokens != eos) & (tokens != pad)


def distinct_n(tokens: jax.Array, content: jax.Array, n: int) -> jax.Array:
    """Distinct n-grams / n-grams over the content of ``tokens [N, T]`` (0 when none).

    n-grams lie inside one document's content; they are counted by one lexicographic sort
    (``lax.sort`` over n key columns, invalid n-grams sorted last).

    >>> t = jnp.array([[1, 2, 1, 2, 1]])
    >>> [round(float(distinct_n(t, t > 0, n)), 4) for n in (1, 2, 3)]
    [0.4, 0.5, 0.6667]
    """
    t = tokens.shape[1]
    m = t - n + 1
    if m < 1:
        return jnp.float32(0.0)
    valid = content[:, :m]
    cols = []
    for j in range(n):
        valid = valid & content[:, j:j + m]
        cols.append(tokens[:, j:j + m].reshape(-1))
    flag = (~valid).reshape(-1).astype(jnp.int32)
    out = jax.lax.sort((flag, *cols), num_keys=n + 1)
    ok = out[0] == 0
    differs = jnp.zeros(ok.shape, jnp.bool_).at[0].set(True)
    for c in out[1:]:
        differs = differs | jnp.concatenate([jnp.ones((1,), jnp.bool_), c[1:] != c[:-1]])
    unique = jnp.sum(differs & ok, dtype=jnp.float32)
    return unique / jnp.maximum(jnp.sum(ok, dtype=jnp.float32), jnp.float32(1.0))


def unigram_entropy(tokens: jax.Array, content: jax.Array, vocab: int) -> jax.Array:
    """Entropy (nats) of the pooled content-token frequencies of ``tokens [N, T]``.

    >>> t = jnp.array([[0, 1, 2, 3]])
    >>> round(float(unigram_entropy(t, t >= 0, 4)), 4) == round(float(np.log(4)), 4)
    True
    """
    counts = jnp.zeros((vocab,), jnp.float32).at[tokens.reshape(-1)].add(
        content.reshape(-1).astype(jnp.float32))
    p = counts / jnp.maximum(jnp.sum(counts), jnp.float32(1.0))
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))


def _row_hashes(tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Two independent 32-bit polynomial hashes of each row of ``tokens [N, T]``."""
    t = tokens.shape[1]
    x = tokens.astype(jnp.uint32) + jnp.uint32(1)
    out = []
    for base in (np.uint32(1_000_003), np.uint32(2_654_435_761)):
        powers = np.ones((t,), np.uint32)
        for i in range(1, t):
            powers[i] = np.uint32((int(powers[i - 1]) * int(base)) & 0xFFFFFFFF)
        out.append(jnp.sum(x * jnp.asarray(powers)[None, :], axis=1, dtype=jnp.uint32))
    return out[0], out[1]


def verbatim_share(samples: jax.Array, train: jax.Array) -> jax.Array:
    """Share of sample rows ``[M, T]`` equal to some training row ``[N, T]`` (whole rows, BOS to
    the padding; compared by two 32-bit hashes, a false match has probability ~M N / 2^64).

    >>> a = jnp.array([[5, 1, 2, 9], [5, 3, 9, 0]])
    >>> float(verbatim_share(a, jnp.array([[5, 1, 2, 9], [5, 3, 3, 9]])))
    0.5
    """
    s1, s2 = _row_hashes(samples)
    t1, t2 = _row_hashes(train)
    hit = jnp.any((s1[:, None] == t1[None, :]) & (s2[:, None] == t2[None, :]), axis=1)
    return jnp.mean(hit.astype(jnp.float32))


def sample_metrics(samples: dict[str, jax.Array], train: dict[str, jax.Array], bos: int,
                   eos: int, pad: int, vocab: int) -> dict[str, jax.Array]:
    """Diversity metrics of generated documents against the real training documents."""
    tokens = samples["tokens"]
    content = content_mask(tokens, bos, eos, pad)
    return {
        "distinct_1": distinct_n(tokens, content, 1),
        "distinct_2": distinct_n(tokens, content, 2),
        "distinct_3": distinct_n(tokens, content, 3),
        "unigram_entropy": unigram_entropy(tokens, content, vocab),
        "mean_length": jnp.mean(jnp.sum(content, axis=1, dtype=jnp.float32)),
        "eos_share": jnp.mean(jnp.any(tokens == eos, axis=1).astype(jnp.float32)),
        "verbatim_share": verbatim_share(tokens, train["tokens"]),
    }
