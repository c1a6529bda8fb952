"""GPT-2 ~9M on TinyStories, replace vs accumulate: the paper's LM experiment (for accelerators).

Command (TinyStories downloaded once by you; collapse_jax never downloads):
    collapse-jax run configs/lm_tinystories.py --set data_path=/path/to/tinystories --out runs/ts
    collapse-jax run configs/lm_tinystories.py --set data_path=/path/to/tinystories --dry-run \
        --out runs/ts

``data_path`` is a directory holding ``TinyStories-train.txt`` and ``TinyStories-valid.txt``
(the release's text files: stories separated by ``<|endoftext|>`` lines; the ``valid`` file is
the held-out test split) or the same stories as ``.jsonl`` files with a ``"text"`` field (source
``text_files``, see ``collapse_jax/data/text.py``). Default: ``~/data/tinystories``.

Setting (Gerstgrasser et al. 2024, Section 3, as the issue summarises it): a byte-level BPE of
8,000 ids trained once on the real training stories (cached under ``$COLLAPSE_JAX_DATA_DIR``);
GPT-2 preset with width 256, 8 layers, 8 heads (8.4M parameters at context 256); every
generation pretrains fresh weights (``init_mode="reinit"``) for one epoch over its pool
(``budget="epochs"``, ``epochs=1``) with AdamW (lr 1e-3, weight decay 0.1, 1,000 warm-up steps,
cosine decay to 10%, clipping at 1.0, batch 128, bfloat16 compute), then samples as many stories
as the real set has (``n = n0``) at temperature 1 from BOS; 5 generations (the paper's
iterations 1-5), 2 seeds per regime. Cross-entropy is measured in nats per BPE token on 2,048
held-out real stories.

Choices the issue does not fix (assumptions, stated): context 256 tokens with stories longer
than 254 tokens cut into consecutive pieces (``long_documents="split"``, nothing dropped);
n0 = n = 2,000,000 stories (the release has ~2.1M training stories; raise n0 to all of them if
the corpus after splitting allows: ``load`` names the number when n0 is too large). The paper's
reference numbers (GPT-2 9M, test cross-entropy, iterations 1..5): replace 1.816, 2.107, 2.270,
2.394, 2.495; accumulate 1.816, 1.759, ~1.749, ~1.744, ~1.743.

Size (planner): the accumulate pool holds n0 + 4 n = 10M stories x 256 int32 tokens = 10.2 GB
per chain, plus one shared copy of the corpus (~2.3 GB); ``--dry-run`` prints the memory per
chain. Without the data, ``--dry-run`` (like a run) stops before anything compiles with one
line, exit code 2: ``data_path='...': no such file or directory`` (the plan's memory estimate
needs the corpus's size). Compute: ~22e9 token positions of training in all (5 generations,
both regimes, one seed) at ~54 MFLOP each; hours on one H100/H200-class accelerator.
"""

from collapse_jax import Experiment


def get_config() -> Experiment:
    return Experiment(
        name="lm_tinystories",
        model="transformer_lm",
        source="text_files",
        data_path="~/data/tinystories",
        regimes=("replace", "accumulate"),
        seeds=2,
        generations=5,
        n=2_000_000,
        d=256,
        n_test=2048,
        hparams={"lr": 1e-3, "temperature": 1.0},
        options={"arch": "gpt2", "width": 256, "depth": 8, "heads": 8, "tokenizer": "bpe",
                 "bpe_vocab": 8000, "long_documents": "split", "start": "bos_fixed_length",
                 "init_mode": "reinit", "budget": "epochs", "epochs": 1, "batch": 128,
                 "optimizer": "adamw", "weight_decay": 0.1, "warmup": 1000,
                 "schedule": "cosine", "min_lr_ratio": 0.1, "clip_norm": 1.0,
                 "compute_dtype": "bfloat16", "sample_batch": 2048, "eval_samples": 256,
                 "eval_batch": 256},
    )
