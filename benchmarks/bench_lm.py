"""Speed of the transformer language model (issue 17): training, decoding, memory per chain.

Model: ``configs/lm_tiny.py``'s network (GPT-2 preset, width 128, 4 layers, 4 heads, byte
vocabulary, batch 32) on KJV documents; every measurement compiles first and then reports the
median of ``--repeats`` warm runs.

- training: tokens/s of ``fit`` (a fixed number of AdamW steps over a pool of real documents)
  for one chain and for K = 8 vmapped chains. Tokens are the ``batch x (context - 1)`` target
  positions of a step (padding included: it is computed). Model FLOPs utilisation = model FLOPs
  per second / the best dense float32 matmul FLOP/s measured in the same process (2 n^3 over a
  few n); model FLOPs per token = 6 N + 12 L W T (PaLM's accounting: N parameters, the tied
  embedding counted once, L layers, width W, context T: the attention scores and values).
- decoding: tokens/s of ``sample`` (the fixed-length scan with the KV cache) vs the same sampler
  re-running the full causal forward over the ``[B, context]`` buffer at every step (no cache),
  at the given context (default 256; goal: >= 5x).
- memory: the peak resident memory of a fresh process running 1 and K vmapped chains (XLA
  CPU's ``memory_analysis`` reports no temporaries), per added chain, against the sweep
  planner's ``sweep.bytes_per_chain`` (goal: within 1.5x).

Usage:
    python benchmarks/bench_lm.py --repeats 3 --out benchmarks/results/lm.jsonl

Prints one JSON line per measurement (with the environment and load average) and appends them
to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import collapse_jax as cj
from collapse_jax import chain as C
from collapse_jax.config import hparams_from
from collapse_jax.models.lm.decode import choose
from collapse_jax.models.lm.net import num_params, split_module
from collapse_jax.models.transformer_lm import lm_config, specials
from collapse_jax.plan import bytes_per_chain

NET = {"width": 128, "depth": 4, "heads": 4, "batch": 32, "warmup": 0, "eval_samples": 64,
       "eval_batch": 64, "sample_batch": 256}


def _static(context: int, steps: int, n: int, generations: int = 2) -> cj.StaticConfig:
    opts = {**NET, "budget": "steps", "steps": steps}
    return cj.StaticConfig(model="transformer_lm", regime="replace", n0=n, n=n, d=context,
                           generations=generations, n_test=256, source="kjv",
                           options=tuple(sorted(opts.items())))


def _median(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile / warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _env() -> dict:
    return {"device": str(jax.devices()[0]), "jax": jax.__version__, "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                             time.gmtime())}


def matmul_flops(repeats: int) -> float:
    """Best dense float32 matmul FLOP/s over a few sizes (this process, this load)."""
    best = 0.0
    for n in (512, 1024, 1536):
        a = jnp.ones((n, n), jnp.float32)
        f = jax.jit(lambda x: x @ x)
        best = max(best, 2 * n**3 / _median(lambda f=f, a=a: f(a), repeats))
    return best


def bench_training(args, peak: float) -> list[dict]:
    static = _static(args.context_train, args.steps, args.n)
    chain = cj.make_chain(static)
    data = chain.source.load(static)
    cfg = lm_config(static)
    hp = hparams_from({"lr": 3e-3, "temperature": 1.0, "top_k": 0.0, "top_p": 1.0})
    out = []
    for k in (1, args.chains):
        keys = jax.random.split(jax.random.key(0), k)
        real = jax.vmap(lambda key: C.draw_real(chain, key, hp, data))(keys)
        pools = jax.vmap(chain.regime.init)(real.train)
        params = jax.vmap(lambda key, r: chain.model.init(key, r, hp))(keys, real)
        fit = jax.jit(jax.vmap(chain.model.fit, in_axes=(0, 0, 0, None)))
        fkeys = jax.random.split(jax.random.key(1), k)
        sec = _median(lambda fit=fit, fk=fkeys, p=pools, q=params: fit(fk, p, q, hp),
                      args.repeats)
        tokens = k * args.steps * NET["batch"] * (static.d - 1)
        per_token = 6 * num_params(cfg) + 12 * cfg.depth * cfg.width * static.d
        out.append({"bench": "lm_train", "chains": k, "context": static.d,
                    "steps": args.steps, "batch": NET["batch"], "params": num_params(cfg),
                    "seconds": sec, "tokens_per_s": tokens / sec,
                    "model_flops_per_s": tokens * per_token / sec, "matmul_flops_per_s": peak,
                    "mfu": tokens * per_token / sec / peak})
    return out


def bench_decode(args) -> list[dict]:
    static = _static(args.context_decode, 1, args.n)
    chain = cj.make_chain(static)
    data = chain.source.load(static)
    cfg, sp = lm_config(static), specials(static)
    hp = hparams_from({"lr": 3e-3, "temperature": 1.0, "top_k": 0.0, "top_p": 1.0})
    real = C.draw_real(chain, jax.random.key(0), hp, data)
    params = chain.model.init(jax.random.key(1), real, hp)
    b, t = args.decode_batch, static.d
    graphdef = split_module(cfg)[0]
    cached = jax.jit(lambda p, key: chain.model.sample(key, p, real, hp, b))

    @jax.jit
    def no_cache(p, key):
        # the same sampler without a cache: the full causal forward over the whole buffer at
        # every step, reading the logits of position t
        net = nnx.merge(graphdef, p["net"])

        def body(tokens, i):
            logits = jax.lax.dynamic_index_in_dim(net(tokens), i, 1, False)
            ids = jnp.arange(cfg.vocab, dtype=jnp.int32)[None, :]
            logits = jnp.where((ids == sp.bos) | (ids == sp.pad), -jnp.inf, logits)
            nxt = choose(jax.random.fold_in(key, i), logits, hp)
            return jax.lax.dynamic_update_index_in_dim(tokens, nxt, i + 1, 1), None

        start = jnp.full((b, t), sp.pad, jnp.int32).at[:, 0].set(sp.bos)
        return jax.lax.scan(body, start, jnp.arange(t - 1, dtype=jnp.int32))[0]

    key = jax.random.key(2)
    sec_c = _median(lambda: cached(params, key), args.repeats)
    sec_f = _median(lambda: no_cache(params, key), max(1, args.repeats // 2))
    tokens = b * (t - 1)
    return [{"bench": "lm_decode", "context": t, "batch": b, "kv_cache_seconds": sec_c,
             "kv_cache_tokens_per_s": tokens / sec_c, "full_forward_seconds": sec_f,
             "full_forward_tokens_per_s": tokens / sec_f, "speedup": sec_f / sec_c}]


def _peak_rss_run(k: int, args) -> int:
    """Peak RSS (bytes) of a fresh process that compiles and runs ``k`` vmapped chains."""
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    code = "\n".join([
        "import resource, sys, jax, jax.numpy as jnp",
        f"sys.path.insert(0, {here!r})",
        "import bench_lm as b, collapse_jax as cj",
        "from collapse_jax.programs import reference_program as compiled_sweep_fn",
        f"s = b._static({args.context_train}, {args.steps}, {args.n})",
        "a = cj.make_chain(s).source.load(s)",
        f"hp = {{n: jnp.full(({k},), v, jnp.float32) for n, v in "
        "{'lr': 3e-3, 'temperature': 1.0, 'top_k': 0.0, 'top_p': 1.0}.items()}",
        "jax.block_until_ready(compiled_sweep_fn(s)(jax.random.key(0), "
        f"jnp.arange({k}, dtype=jnp.int32), hp, a))",
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.strip().splitlines()[-1])


def bench_memory(args) -> list[dict]:
    """Peak RSS of K vs 1 chains in fresh processes (XLA CPU's ``memory_analysis`` reports no
    temporaries, so the process's resident peak is the measure), per added chain, against
    ``sweep.bytes_per_chain``."""
    static = _static(args.context_train, args.steps, args.n)
    data = cj.make_chain(static).source.load(static)
    estimate = bytes_per_chain(static, data)
    k = args.chains
    peaks = {c: _peak_rss_run(c, args) for c in (1, k)}
    per_chain = (peaks[k] - peaks[1]) / (k - 1)
    return [{"bench": "lm_memory", "chains": k, "peak_rss_1_chain": peaks[1],
             f"peak_rss_{k}_chains": peaks[k], "measured_per_chain": per_chain,
             "estimate_per_chain": estimate, "estimate_over_measured": estimate / per_chain}]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chains", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--context-train", type=int, default=128)
    p.add_argument("--context-decode", type=int, default=256)
    p.add_argument("--decode-batch", type=int, default=16)
    p.add_argument("--only", choices=("train", "decode", "memory"), default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    def emit(records):
        for r in records:
            line = json.dumps({**r, **_env()}, default=float)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(line + "\n")

    if args.only in (None, "train"):
        emit(bench_training(args, matmul_flops(args.repeats)))
    if args.only in (None, "decode"):
        emit(bench_decode(args))
    if args.only in (None, "memory"):
        emit(bench_memory(args))


if __name__ == "__main__":
    main()
