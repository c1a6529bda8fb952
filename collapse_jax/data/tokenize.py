"""Tokenizers for the language-model sources: byte level (default) and a cached byte-level BPE.

Both are host-side (numpy / the ``tokenizers`` package) and give the same ``Tokenizer`` record:

- ``byte``: ids 0..255 are the UTF-8 bytes of the text, then three specials: BOS = 256,
  EOS = 257, PAD = 258 (vocabulary 259). No download, no training.
- ``bpe``: a byte-level BPE (the GPT-2 scheme: text -> UTF-8 bytes -> 256 printable symbols ->
  merges) trained once with the ``tokenizers`` package on the REAL training split of a corpus,
  vocabulary ``vocab_size`` (8,000 as in Gerstgrasser et al.'s TinyStories runs) including the
  specials BOS = 0, EOS = 1, PAD = 2. It is cached as JSON under the user's data directory
  (``$COLLAPSE_JAX_DATA_DIR``, default ``~/.cache/collapse_jax/data``), keyed by the corpus name,
  a SHA-256 of its training texts and the vocabulary size, and written atomically (a temporary
  file renamed into place), so concurrent runs never read half a file.

Every token id maps to an exact byte string (``token_bytes`` / ``token_len``, the specials map
to no bytes), so decoding, byte counts (bits per byte) and ``samples.txt`` need only numpy.

References:
    Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword Units"
        (BPE), arXiv:1508.07909.
    Radford et al. 2019, "Language Models are Unsupervised Multitask Learners" (byte-level BPE).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from collapse_jax.config import ConfigError

TOKENIZERS = ("byte", "bpe")
#: ``(bos, eos, pad)`` ids of each tokenizer (static: the model needs them at trace time).
SPECIALS = {"byte": (256, 257, 258), "bpe": (0, 1, 2)}
BPE_SPECIAL_TOKENS = ("<bos>", "<eos>", "<pad>")
BYTE_VOCAB = 259
ENV_DATA_DIR = "COLLAPSE_JAX_DATA_DIR"


class Tokenizer(NamedTuple):
    """A host tokenizer.

    Attributes:
        name: ``"byte"`` or ``"bpe"``.
        vocab_size: number of token ids (specials included).
        bos, eos, pad: the special ids.
        encode: ``texts -> [ids]``: content ids of each text (int32 arrays, no specials).
        token_bytes: ``[vocab_size, max_len]`` uint8, the bytes of each token (zero padded).
        token_len: ``[vocab_size]`` int32, bytes per token (0 for the specials).
    """

    name: str
    vocab_size: int
    bos: int
    eos: int
    pad: int
    encode: Callable[[Sequence[str]], list[np.ndarray]]
    token_bytes: np.ndarray
    token_len: np.ndarray

    def decode(self, ids: Sequence[int]) -> str:
        """Text of content ids (specials dropped; invalid UTF-8 shown as U+FFFD).

        >>> byte_tokenizer().decode([72, 105, 257])
        'Hi'
        """
        ids = np.asarray(ids, np.int64)
        return decode_bytes(ids, self.token_bytes, self.token_len)


def vocab_size(tokenizer: str, bpe_vocab: int) -> int:
    """Model vocabulary of a tokenizer option (259 for bytes, ``bpe_vocab`` for BPE)."""
    return BYTE_VOCAB if tokenizer == "byte" else int(bpe_vocab)


def decode_bytes(ids: np.ndarray, token_bytes: np.ndarray, token_len: np.ndarray) -> str:
    """Text of token ids through a byte table (ids out of range and specials give no bytes).

    >>> t = byte_tokenizer()
    >>> decode_bytes(np.array([104, 105, 258]), t.token_bytes, t.token_len)
    'hi'
    """
    ids = np.asarray(ids, np.int64).reshape(-1)
    ids = ids[(ids >= 0) & (ids < token_len.shape[0])]
    out = b"".join(token_bytes[i, : token_len[i]].tobytes() for i in ids)
    return out.decode("utf-8", errors="replace")


def byte_tokenizer() -> Tokenizer:
    """The byte-level tokenizer: ids 0..255 = UTF-8 bytes, BOS 256, EOS 257, PAD 258.

    >>> t = byte_tokenizer()
    >>> [a.tolist() for a in t.encode(["Hi", "é"])], t.vocab_size
    ([[72, 105], [195, 169]], 259)
    """
    table = np.zeros((BYTE_VOCAB, 1), np.uint8)
    table[:256, 0] = np.arange(256, dtype=np.uint8)
    lens = np.zeros((BYTE_VOCAB,), np.int32)
    lens[:256] = 1

    def encode(texts):
        return [np.frombuffer(t.encode("utf-8"), np.uint8).astype(np.int32) for t in texts]

    return Tokenizer("byte", BYTE_VOCAB, *SPECIALS["byte"], encode, table, lens)


# ----------------------------------------------------------------------------------------------
# Byte-level BPE (trained with the ``tokenizers`` package, cached)


def data_dir() -> Path:
    """The user's data directory: ``$COLLAPSE_JAX_DATA_DIR`` or ``~/.cache/collapse_jax/data``."""
    env = os.environ.get(ENV_DATA_DIR)
    return Path(env) if env else Path.home() / ".cache" / "collapse_jax" / "data"


def corpus_digest(texts: Sequence[str]) -> str:
    """SHA-256 (hex, 16 characters) of a list of texts (order matters).

    >>> corpus_digest(["a", "b"]) != corpus_digest(["ab"])
    True
    """
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:16]


def bpe_cache_path(corpus: str, texts: Sequence[str], vocab: int) -> Path:
    """Where the BPE of ``corpus`` (its training ``texts``) with ``vocab`` ids is cached."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in corpus)[:60]
    return data_dir() / "tokenizers" / f"bpe-{safe}-{corpus_digest(texts)}-v{vocab}.json"


def _byte_symbols() -> dict[int, str]:
    """GPT-2's map from the 256 byte values to printable characters (the byte-level alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError("options.tokenizer='bpe' needs the tokenizers package: "
                          "pip install 'collapse_jax[lm]'") from e
    return tokenizers


def train_bpe(texts: Sequence[str], vocab: int):
    """A byte-level BPE of ``vocab`` ids (specials first) trained on ``texts`` (deterministic
    for a given corpus and package version)."""
    tk = _import_tokenizers()
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=list(BPE_SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def bpe_tokenizer(corpus: str, texts: Sequence[str], vocab: int) -> Tokenizer:
    """The BPE of ``corpus`` trained on its training ``texts``, from the cache or trained now.

    A BPE with fewer merges than asked (a small corpus) keeps ``vocab`` ids; the unused ones
    never occur in the data.
    """
    if vocab < 256 + len(BPE_SPECIAL_TOKENS):
        raise ConfigError(f"options.bpe_vocab={vocab}: must be >= 259 (256 bytes + 3 specials)")
    tk = _import_tokenizers()
    path = bpe_cache_path(corpus, texts, vocab)
    if path.is_file():
        try:
            tok = tk.Tokenizer.from_str(path.read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001 - a corrupt cache file is retrained and replaced
            tok = None
    else:
        tok = None
    if tok is None:
        tok = train_bpe(texts, vocab)
        _write_atomic(path, tok.to_str())
    return _wrap_bpe(tok, vocab)


def _wrap_bpe(tok, vocab: int) -> Tokenizer:
    for i, s in enumerate(BPE_SPECIAL_TOKENS):
        if tok.token_to_id(s) != i:
            raise ConfigError(f"options.tokenizer='bpe': cached tokenizer has {s!r} at id "
                              f"{tok.token_to_id(s)}, expected {i}; delete the cache file")
    inverse = {c: b for b, c in _byte_symbols().items()}
    pieces = [b""] * vocab
    for token, i in tok.get_vocab().items():
        if i >= vocab:
            raise ConfigError(f"options.bpe_vocab={vocab}: the tokenizer has id {i}")
        if i >= len(BPE_SPECIAL_TOKENS):
            pieces[i] = bytes(inverse[c] for c in token)
    width = max(1, max(len(p) for p in pieces))
    table = np.zeros((vocab, width), np.uint8)
    lens = np.zeros((vocab,), np.int32)
    for i, p in enumerate(pieces):
        table[i, : len(p)] = np.frombuffer(p, np.uint8)
        lens[i] = len(p)

    def encode(texts):
        return [np.asarray(e.ids, np.int32) for e in tok.encode_batch(list(texts),
                                                                      add_special_tokens=False)]

    return Tokenizer("bpe", vocab, *SPECIALS["bpe"], encode, table, lens)


def make_tokenizer(name: str, corpus: str, train_texts: Sequence[str], bpe_vocab: int
                   ) -> Tokenizer:
    """The tokenizer an option names (``byte`` or ``bpe`` trained on ``train_texts``)."""
    if name == "byte":
        return byte_tokenizer()
    if name == "bpe":
        return bpe_tokenizer(corpus, train_texts, bpe_vocab)
    raise ConfigError(f"options.tokenizer={name!r}: allowed values are {list(TOKENIZERS)}")

