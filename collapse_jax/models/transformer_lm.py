"""Causal transformer language models pretrained on their own text (``transformer_lm``).

The headline experiment of Gerstgrasser et al. 2024: a decoder-only transformer is pretrained
from scratch on real documents (generation 0); it samples as many documents as the real set
has; the next model is pretrained from scratch on those samples only (``replace``) or on the
real documents plus every sample so far (``accumulate``); each generation is evaluated on
held-out REAL text. Everything runs inside one jitted, vmapped chain: training is the shared
optax loop (``fitting.make_sgd_fit``), sampling a fixed-length scan with a KV cache.

Network (``collapse_jax.models.lm.net``): GPT-2 or Llama preset (option ``arch``), ``width``,
``depth``, ``heads``; the context ``d`` and vocabulary come from the static config and the
tokenizer; tied embeddings; ``compute_dtype="bfloat16"`` computes in bfloat16 with float32
parameters (for accelerators).

Training: AdamW (``optimizer``, ``weight_decay``), linear warm-up then cosine decay to
``min_lr_ratio * lr`` per generation (``warmup``, ``schedule``), global-norm clipping
(``clip_norm``), minibatches of ``batch`` documents from the valid pool slots; loss = mean
next-token NLL over the minibatch's real tokens (padding masked). ``budget="epochs"`` with
``epochs=1`` is the paper's one epoch per generation (the accumulate pool grows, so do its
steps); ``budget="steps"`` fixes compute. ``init_mode="reinit"`` (default, as in the paper)
draws fresh weights every generation; ``"warm"`` continues from the previous generation.

Sampling (``collapse_jax.models.lm.decode``): hyperparameters ``temperature`` (0 = greedy),
``top_k`` (0 = off), ``top_p`` (1 = off), vmappable; start modes ``bos_fixed_length`` /
``first_token_inclusive`` (option ``start``); decoded in chunks of ``sample_batch`` documents.

Metrics (generation g; held-out real test documents ``real.test``; samples: ``eval_samples``
documents drawn with a fixed key, i.e. common random numbers across generations and chains):
    cross_entropy: nats per target token of the test documents (content and EOS).
    bits_per_byte: the same NLL in bits per UTF-8 byte of the test text.
    perplexity: exp(cross_entropy).
    distinct_1/2/3, unigram_entropy, mean_length, eos_share, verbatim_share: see
        ``collapse_jax.models.lm.metrics`` (verbatim: a sample equal to one of the chain's D0
        documents).
    train_loss: mean minibatch NLL over the last tenth of the fit's steps.
    wasted_step_fraction: share of the fit's scan steps that were masked no-ops (epochs budget).

References:
    Gerstgrasser et al. 2024, "Is Model Collapse Inevitable? Breaking the Curse of Recursion by
        Accumulating Real and Synthetic Data", arXiv:2404.01413 (TinyStories, GPT-2 9M: replace
        1.82 -> 2.50 nats over 5 iterations; accumulate -> 1.74).
    Shumailov et al. 2024, "AI models collapse when trained on recursively generated data",
        Nature 631.
    Radford et al. 2019 (GPT-2); Touvron et al. 2023 (Llama 2), arXiv:2307.09288.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from collapse_jax.config import NONNEGATIVE, POSITIVE, ConfigError, HparamRange, StaticConfig
from collapse_jax.data.text import LONG_DOCUMENTS, TEXT_SOURCES
from collapse_jax.data.tokenize import SPECIALS, TOKENIZERS, decode_bytes, vocab_size
from collapse_jax.files import write_text
from collapse_jax.fitting import FitConfig
from collapse_jax.model import lazy_factory, make_source, register_model
from collapse_jax.models.lm.config import ARCHS, LMConfig, check_config
from collapse_jax.models.lm.decode import START_MODES, Specials

#: Seed of the fixed evaluation samples (common random numbers across generations and chains).
EVAL_SEED = 4321
LN2 = float(np.log(2.0))

_OPTIONS = {
    "arch": ARCHS,
    "width": (128, 8, 16, 32, 48, 64, 96, 192, 256, 288, 384, 512, 768),
    "depth": (4, 1, 2, 3, 6, 8, 12),
    "heads": (4, 1, 2, 6, 8, 12),
    "tokenizer": TOKENIZERS,
    "bpe_vocab": (8000, 300, 512, 1000, 2000, 4000, 16000, 32000),
    "long_documents": LONG_DOCUMENTS,
    "start": START_MODES,
    "init_mode": ("reinit", "warm"),
    "budget": ("epochs", "steps"),
    "epochs": (1, 0.25, 0.5, 2, 3, 4, 5, 8, 10, 20),
    "steps": (200, 1, 2, 5, 10, 20, 50, 100, 300, 500, 1000, 2000, 5000, 10000),
    "batch": (32, 2, 4, 8, 16, 64, 128, 256, 512),
    "optimizer": ("adamw", "adam"),
    "weight_decay": (0.1, 0.0, 0.01),
    "warmup": (100, 0, 5, 10, 20, 50, 200, 500, 1000, 2000),
    "schedule": ("cosine", "constant"),
    "min_lr_ratio": (0.1, 0.0, 0.01),
    "clip_norm": (1.0, 0.0, 0.5),
    "compute_dtype": ("float32", "bfloat16"),
    "sample_batch": (256, 4, 8, 16, 32, 64, 128, 512, 1024, 2048),
    "eval_samples": (64, 4, 8, 16, 32, 128, 256, 512),
    "eval_batch": (64, 4, 8, 16, 32, 128, 256),
}

METRICS = ("cross_entropy", "bits_per_byte", "perplexity", "distinct_1", "distinct_2",
           "distinct_3", "unigram_entropy", "mean_length", "eos_share", "verbatim_share",
           "train_loss", "wasted_step_fraction")


def _opt(static: StaticConfig, name: str):
    return static.option(name, _OPTIONS[name][0])


def lm_config(static: StaticConfig) -> LMConfig:
    """The network shape a static config names (context = ``d``)."""
    return LMConfig(arch=_opt(static, "arch"),
                    vocab=vocab_size(_opt(static, "tokenizer"), _opt(static, "bpe_vocab")),
                    context=static.d, width=_opt(static, "width"), depth=_opt(static, "depth"),
                    heads=_opt(static, "heads"), dtype=_opt(static, "compute_dtype"))


def specials(static: StaticConfig) -> Specials:
    return Specials(*SPECIALS[_opt(static, "tokenizer")])


def fit_config(static: StaticConfig) -> FitConfig:
    return FitConfig(
        batch=_opt(static, "batch"), init_mode=_opt(static, "init_mode"),
        budget=_opt(static, "budget"), steps=_opt(static, "steps"),
        epochs=_opt(static, "epochs"), optimizer=_opt(static, "optimizer"),
        weight_decay=_opt(static, "weight_decay"), warmup=_opt(static, "warmup"),
        schedule=_opt(static, "schedule"), min_lr_ratio=_opt(static, "min_lr_ratio"),
        clip_norm=_opt(static, "clip_norm"))


def _check(static: StaticConfig) -> None:
    source = static.source or "kjv"
    if source not in TEXT_SOURCES:
        raise ConfigError(f"source={source!r}: transformer_lm needs a text source; allowed: "
                          f"{', '.join(TEXT_SOURCES)}")
    if static.d < 4:
        raise ConfigError(f"d={static.d}: d is the context length in tokens; must be >= 4")
    problem = check_config(lm_config(static))
    if problem:
        raise ConfigError(problem)


register_model(
    "transformer_lm",
    source="kjv",
    hparams={"lr": 1e-3, "temperature": 1.0, "top_k": 0.0, "top_p": 1.0},
    ranges={"lr": POSITIVE, "temperature": NONNEGATIVE, "top_k": NONNEGATIVE,
            "top_p": HparamRange(0.0, 1.0, lo_open=True)},
    options=_OPTIONS,
    metrics=METRICS,
    check=_check,
    doc="causal transformer LM (flax nnx GPT-2 / Llama) pretrained on its own text; KV-cache "
        "sampling in the scan",
    snapshot=8,
    render=lambda samples, static, out_dir: [write_samples_text(
        samples, make_source(static).load(static), Path(out_dir) / "samples.txt")],
    example_regimes=("accumulate_subsample", "replace"),
    example={"n0": 8, "n": 8, "d": 12, "n_test": 6,
             "options": {"width": 8, "depth": 1, "heads": 2, "batch": 4, "budget": "steps",
                         "steps": 2, "warmup": 0, "eval_samples": 4, "eval_batch": 4,
                         "sample_batch": 4, "long_documents": "split"}},
)(lazy_factory("collapse_jax.models.transformer_lm_chain", "make_transformer_lm"))


# ----------------------------------------------------------------------------------------------
# Host rendering of samples (samples.txt)


def decode_documents(docs: dict[str, np.ndarray], args: dict[str, Any]) -> list[str]:
    """Texts of generated (or real) documents ``{"tokens": [num, d], "length": [num]}``."""
    tokens = np.asarray(docs["tokens"])
    length = np.asarray(docs["length"]).reshape(-1)
    table, lens = np.asarray(args["token_bytes"]), np.asarray(args["token_len"])
    return [decode_bytes(tokens[i, : length[i]], table, lens) for i in range(tokens.shape[0])]


def write_samples_text(samples: dict[str, dict[int, dict[str, np.ndarray]]],
                       args: dict[str, Any], path: str | Path, per_generation: int = 3,
                       width: int = 100) -> Path:
    """Write ``samples.txt``: per regime and generation, up to ``per_generation`` decoded texts.

    Args:
        samples: ``samples[regime][generation]`` = what ``sample`` returned for ``num``
            documents (numpy: ``"tokens"`` ``[num, d]``, ``"length"`` ``[num]``).
        args: the source's host args (``token_bytes`` / ``token_len`` decode the tokens,
            ``specials`` holds BOS / EOS / PAD).
        path: the file to write (its directory is created).
        per_generation: texts per regime and generation.
        width: lines are wrapped at this many characters.

    Returns:
        The path written.
    """
    import textwrap

    path = Path(path)
    lines = ["Samples of the first chain of each regime (documents generated by the model fit "
             "at that generation; BOS/EOS/PAD removed, '[no EOS]' marks a document that filled "
             "the context).", ""]
    eos = int(np.asarray(args["specials"])[1])
    for regime in samples:
        for generation in sorted(samples[regime]):
            docs = samples[regime][generation]
            texts = decode_documents(docs, args)
            tokens = np.asarray(docs["tokens"])
            length = np.asarray(docs["length"]).reshape(-1)
            lines.append(f"=== regime {regime}, generation {generation} "
                         f"({len(texts)} samples, showing {min(per_generation, len(texts))})")
            for i, text in enumerate(texts[:per_generation]):
                ended = int(tokens[i, max(int(length[i]) - 1, 0)]) == eos
                body = textwrap.fill(" ".join(text.split()) or "(empty)", width=width,
                                     initial_indent=f"[{i}] ", subsequent_indent="    ")
                lines.append(body + ("" if ended else " [no EOS]"))
            lines.append("")
    write_text(path, "\n".join(lines))
    return path

