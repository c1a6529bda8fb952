"""A ~1M-parameter GPT-2 pretrained on its own King James text: replace vs accumulate (CPU).

Command:
    collapse-jax run configs/lm_tiny.py --out runs/lm_tiny

Setting (Gerstgrasser et al. 2024's language-model experiment, scaled to 2 CPU cores): byte
tokens (vocabulary 259), context 128; each chain draws a random D0 of n0 = 512 real KJV
documents (one or a few consecutive verses, at most 126 bytes; held-out test text: every 10th
chapter, 256 documents), pretrains a GPT-2 preset (width 128, 4 layers, 4 heads, 0.84M
parameters, tied embeddings) from fresh weights for ONE epoch over its pool (AdamW lr 3e-3,
weight decay 0.1, 10 warm-up steps then cosine decay to 10%, clipping at 1.0, batch 16), then
samples n = 512 documents at temperature 1 from BOS for the next generation. 5 generations,
4 seeds per regime; the seeds of a regime are one vmapped program. Under ``accumulate`` the
pool and the epoch grow (512, 1,024, ... 2,560 documents: 32 to 160 AdamW steps).

Expected runtime on 2 CPU cores: measured 1,693 s wall (28 min: compile 158 s, run 1,517 s)
with ``COLLAPSE_JAX_CACHE_DIR=off`` on 2 cores shared with other jobs (load average 1.4-6.6,
about 4 on average); replace took ~13 min, accumulate ~15 min (its one-epoch scan is sized for
the final 2,560-document pool: 160 steps every generation, 40% of them masked no-ops).

Expected result (measured, held-out real cross-entropy in nats per byte, mean +- s.e. over 4
seeds; generation 0 is shared):

    generation   replace          accumulate
    0            2.638 +- 0.019   2.638 +- 0.019
    1            2.910 +- 0.051   2.590 +- 0.011
    2            3.073 +- 0.032   2.561 +- 0.018
    3            3.147 +- 0.015   2.557 +- 0.031
    4            3.200 +- 0.019   2.552 +- 0.019

replace rises every generation (+21% by generation 4); accumulate falls (-3.3%). Replace's
samples get shorter (mean length 68 -> 48 bytes) and end with EOS more often (0.78 -> 0.88).
"""

from collapse_jax import Experiment


def get_config() -> Experiment:
    return Experiment(
        name="lm_tiny",
        model="transformer_lm",
        source="kjv",
        regimes=("replace", "accumulate"),
        seeds=4,
        generations=5,
        n=512,
        d=128,
        n_test=256,
        hparams={"lr": 3e-3, "temperature": 1.0},
        options={"arch": "gpt2", "width": 128, "depth": 4, "heads": 4, "tokenizer": "byte",
                 "init_mode": "reinit", "budget": "epochs", "epochs": 1, "batch": 16,
                 "optimizer": "adamw", "weight_decay": 0.1, "warmup": 10, "schedule": "cosine",
                 "min_lr_ratio": 0.1, "clip_norm": 1.0, "sample_batch": 512,
                 "eval_samples": 64, "eval_batch": 64},
    )
