"""The transformer language-model family: network, KV-cache decoding, sampling filters, training
on real text, metrics, no recompiles, vmap = separate chains, samples.txt."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from collapse_jax import (
    Experiment,
    StaticConfig,
    compiling,
    make_chain,
    programs,
    run_chain,
    validate,
)
from collapse_jax.chain import draw_real
from collapse_jax.config import ConfigError
from collapse_jax.model import MODELS, make_model
from collapse_jax.models.lm.decode import Specials, allowed_tokens, choose, decode, start_prefix
from collapse_jax.models.lm.metrics import chunked_nll, distinct_n, unigram_entropy, verbatim_share
from collapse_jax.models.lm.net import LMConfig, empty_cache, init_state, split_module
from collapse_jax.models.transformer_lm import decode_documents, lm_config, write_samples_text
from collapse_jax.sweep import run_sweep

SP = Specials(256, 257, 258)
# One static config shared by every test that compiles a chain (compiles dominate on CPU):
# GPT-2 preset, width 32, 2 layers, context 32 bytes, 200 AdamW steps per generation.
TINY = {"width": 32, "depth": 2, "heads": 2, "batch": 16, "budget": "steps", "steps": 200,
        "warmup": 10, "eval_samples": 16, "eval_batch": 32, "sample_batch": 32}


def _static(regime="replace", generations=2, **options):
    opts = {**TINY, **options}
    return StaticConfig(model="transformer_lm", regime=regime, n0=64, n=64, d=32,
                        generations=generations, n_test=32, options=tuple(sorted(opts.items())))


def _hp(lr=3e-3, temperature=1.0, top_k=0.0, top_p=1.0):
    return {"lr": jnp.float32(lr), "temperature": jnp.float32(temperature),
            "top_k": jnp.float32(top_k), "top_p": jnp.float32(top_p)}


def _net(arch, key=0, context=24, dtype="float32"):
    cfg = LMConfig(arch, 259, context, 32, 2, 4, dtype)
    graphdef, abstract = split_module(cfg)
    return cfg, graphdef, init_state(jax.random.key(key), abstract, cfg.depth)


# ----------------------------------------------------------------------------------------------
# Network


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_kv_cache_decoding_equals_the_full_forward(arch):
    """Position-by-position decoding through the KV cache gives the full causal forward's logits
    (float32; tolerance 1e-5 absolute on logits of size ~1: reassociated sums only)."""
    cfg, graphdef, state = _net(arch)
    tokens = jax.random.randint(jax.random.key(1), (3, cfg.context), 0, 256)

    @jax.jit
    def both(state, tokens):
        net = nnx.merge(graphdef, state)

        def body(cache, t):
            logits, cache = net.decode_step(jax.lax.dynamic_index_in_dim(tokens, t, 1, False),
                                            t, cache)
            return cache, logits

        _, steps = jax.lax.scan(body, empty_cache(cfg, 3),
                                jnp.arange(cfg.context, dtype=jnp.int32))
        return net(tokens), jnp.swapaxes(steps, 0, 1)

    full, cached = both(state, tokens)
    assert full.shape == (3, cfg.context, 259) and full.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(cached), np.asarray(full), atol=1e-5, rtol=0)
    assert float(jnp.std(full)) > 0.1  # not trivially constant


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_causality_with_a_negative_control(arch):
    """Changing tokens after position t leaves the logits at positions <= t unchanged; changing
    a token at or before t changes them (the negative control)."""
    cfg, graphdef, state = _net(arch, key=2)
    fwd = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    a = jax.random.randint(jax.random.key(3), (2, cfg.context), 0, 256)
    t = 10
    b = a.at[:, t + 1:].set((a[:, t + 1:] + 7) % 256)
    la, lb = np.asarray(fwd(state, a)), np.asarray(fwd(state, b))
    np.testing.assert_allclose(lb[:, : t + 1], la[:, : t + 1], atol=1e-6, rtol=0)
    assert np.abs(lb[:, t + 1:] - la[:, t + 1:]).max() > 1e-3
    c = a.at[:, t].set((a[:, t] + 7) % 256)
    lc = np.asarray(fwd(state, c))
    np.testing.assert_allclose(lc[:, :t], la[:, :t], atol=1e-6, rtol=0)
    assert np.abs(lc[:, t] - la[:, t]).max() > 1e-3


def test_bfloat16_compute_keeps_float32_parameters():
    cfg, graphdef, state = _net("llama", dtype="float32")
    cfg16, graphdef16, _ = _net("llama", dtype="bfloat16")
    tokens = jax.random.randint(jax.random.key(4), (2, cfg.context), 0, 256)
    f32 = jax.jit(lambda s: nnx.merge(graphdef, s)(tokens))(state)
    b16 = jax.jit(lambda s: nnx.merge(graphdef16, s)(tokens))(state)  # same float32 weights
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state))
    assert b16.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(b16), np.asarray(f32), atol=0.05)


# ----------------------------------------------------------------------------------------------
# Sampling


def _np_support(logits, temperature, top_k, top_p):
    """Reference: the allowed set by sorting in numpy."""
    order = np.argsort(-logits, kind="stable")
    z = logits[order] / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    keep = np.ones(len(logits), bool)
    if top_k > 0:
        keep &= np.arange(len(logits)) < top_k
    if top_p < 1:
        keep &= (np.cumsum(p) - p) < top_p
    keep[0] = True
    out = np.zeros(len(logits), bool)
    out[order] = keep
    return out


@pytest.mark.parametrize("top_k,top_p", [(5.0, 1.0), (0.0, 0.6), (3.0, 0.3), (0.0, 1.0)])
def test_top_k_top_p_keep_exactly_the_allowed_tokens(top_k, top_p):
    """The allowed set equals the numpy reference, and 4,000 draws stay inside it and reach all
    of it. Negative control: without filters the same draws leave that set."""
    logits = jax.random.normal(jax.random.key(5), (1, 12), jnp.float32) * 1.5
    hp = _hp(temperature=1.3, top_k=top_k, top_p=top_p)
    keep = np.asarray(allowed_tokens(logits, hp["temperature"], hp["top_k"], hp["top_p"]))[0]
    np.testing.assert_array_equal(keep, _np_support(np.asarray(logits[0]), 1.3, top_k, top_p))
    many = jnp.tile(logits, (4000, 1))
    draws = np.asarray(choose(jax.random.key(6), many, hp))
    assert set(draws.tolist()) == set(np.flatnonzero(keep).tolist())
    if keep.sum() < 12:
        free = np.asarray(choose(jax.random.key(6), many, _hp(temperature=1.3)))
        assert not set(free.tolist()) <= set(np.flatnonzero(keep).tolist())


def test_temperature_to_zero_is_greedy():
    """Temperature 0 is the argmax exactly; 1e-4 gives the same decoded documents as greedy
    decoding computed independently (full forward, argmax, one position at a time)."""
    cfg, graphdef, state = _net("gpt2", key=7, context=20)
    net = nnx.merge(graphdef, state)
    prefix = jnp.full((4, 1), SP.bos, jnp.int32)

    def run(t):
        return jax.jit(lambda s, k: decode(nnx.merge(graphdef, s).decode_step, empty_cache(cfg, 4),
                                           k, prefix, _hp(temperature=t), SP, cfg.context))(
            state, jax.random.key(8))["tokens"]

    seq = np.full((4, cfg.context), SP.pad, np.int32)
    seq[:, 0] = SP.bos
    done = np.zeros(4, bool)
    for t in range(cfg.context - 1):
        logits = np.asarray(net(jnp.asarray(seq)))[:, t].copy()
        logits[:, [SP.bos, SP.pad]] = -np.inf
        nxt = np.where(done, SP.pad, logits.argmax(-1))
        seq[:, t + 1] = nxt
        done |= nxt == SP.eos
    np.testing.assert_array_equal(np.asarray(run(0.0)), seq)
    np.testing.assert_array_equal(np.asarray(run(1e-4)), seq)
    assert not np.array_equal(np.asarray(run(1.0)), seq)  # negative control


def test_decode_masks_after_eos_and_never_samples_specials():
    """Forcing EOS to be likely: every row is BOS, content, EOS, then PAD only; BOS and PAD are
    never drawn; length counts BOS..EOS."""
    v, ctx, b = 259, 12, 64

    def step(token, pos, cache):
        logits = jnp.zeros((token.shape[0], v), jnp.float32).at[:, SP.eos].set(1.5)
        return logits.at[:, SP.pad].set(50.0).at[:, SP.bos].set(50.0), cache

    out = decode(step, None, jax.random.key(9), jnp.full((b, 1), SP.bos, jnp.int32),
                 _hp(), SP, ctx)
    tok, length = np.asarray(out["tokens"]), np.asarray(out["length"])
    assert np.all(tok[:, 0] == SP.bos) and not np.any(tok[:, 1:] == SP.bos)
    for row, n in zip(tok, length, strict=True):
        eos = np.flatnonzero(row == SP.eos)
        if len(eos):
            assert eos[0] == n - 1 and np.all(row[n:] == SP.pad)
        else:
            assert n == ctx and not np.any(row == SP.pad)
    assert 0 < np.mean(length < ctx) < 1


def test_first_token_inclusive_starts_from_real_first_tokens():
    cfg, graphdef, state = _net("gpt2", key=15, context=16)
    train = {"tokens": jnp.array([[256, 65, 66, 257], [256, 67, 257, 258], [256, 68, 69, 70]],
                                 jnp.int32)}
    prefix = start_prefix(jax.random.key(16), "first_token_inclusive", train, 40, SP)
    assert prefix.shape == (40, 2) and np.all(np.asarray(prefix[:, 0]) == SP.bos)
    assert set(np.asarray(prefix[:, 1]).tolist()) == {65, 67, 68}
    out = jax.jit(lambda s: decode(nnx.merge(graphdef, s).decode_step, empty_cache(cfg, 40),
                                   jax.random.key(17), prefix, _hp(), SP, cfg.context))(state)
    np.testing.assert_array_equal(np.asarray(out["tokens"][:, :2]), np.asarray(prefix))
    bos_only = start_prefix(jax.random.key(16), "bos_fixed_length", train, 40, SP)
    assert bos_only.shape == (40, 1)


# ----------------------------------------------------------------------------------------------
# Metrics


def test_distinct_and_entropy_against_numpy():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 6, size=(5, 9)).astype(np.int32)
    content = rng.random((5, 9)) < 0.8
    for n in (1, 2, 3):
        grams = [tuple(tokens[i, j:j + n]) for i in range(5) for j in range(9 - n + 1)
                 if content[i, j:j + n].all()]
        want = len(set(grams)) / len(grams)
        assert float(distinct_n(jnp.asarray(tokens), jnp.asarray(content), n)) == \
            pytest.approx(want, rel=1e-6)
    counts = np.bincount(tokens[content], minlength=6) / content.sum()
    want = -np.sum(counts[counts > 0] * np.log(counts[counts > 0]))
    assert float(unigram_entropy(jnp.asarray(tokens), jnp.asarray(content), 6)) == \
        pytest.approx(want, rel=1e-5)


def test_verbatim_share_finds_copies_only():
    train = jax.random.randint(jax.random.key(10), (50, 16), 0, 256)
    samples = train[:10].at[5:, 3].add(1)  # 5 exact copies, 5 changed in one token
    assert float(verbatim_share(samples, train)) == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------------
# Chains (one static config; compiled twice in all)


@pytest.fixture(scope="module")
def runs():
    """replace, 2 generations of 200 steps (generation 0, then one ``advance`` call); a
    2-chain sweep (distinct lr, temperature, top_k, top_p) run one generation per call, and the
    same chains run one at a time with one jitted program. Three compiles in all (the sweep's
    generation-0 and ``advance`` programs, the single-chain program)."""
    static = _static(generations=2)
    chain = make_chain(static)
    args = chain.source.load(static)
    hp = {"lr": np.array([3e-3, 2e-3], np.float32), "temperature": np.array([1.0, 0.8],
                                                                            np.float32),
          "top_k": np.array([0.0, 50.0], np.float32), "top_p": np.array([1.0, 0.95],
                                                                        np.float32)}
    programs.clear_caches()  # count this sweep's programs from an empty cache
    sweep = run_sweep(static, jax.random.key(11), [0, 1], hp, args, generation_chunk=1)
    compiled = len(compiling._EXECUTABLES)
    single = jax.jit(lambda k, h, a: run_chain(chain, k, h, a))
    singles = [single(jax.random.fold_in(jax.random.key(11), i),
                      {k: jnp.float32(v[i]) for k, v in hp.items()}, args) for i in range(2)]
    return {"static": static, "chain": chain, "args": args, "sweep": sweep, "single": single,
            "singles": singles, "hp": hp, "compiled": compiled}


def test_training_lowers_held_out_cross_entropy(runs):
    """200 AdamW steps on 64 real KJV documents (context 32 bytes) take the held-out
    cross-entropy from ~ln 259 = 5.56 nats/byte (fresh weights) to below 3.3."""
    static, chain, args = runs["static"], runs["chain"], runs["args"]
    real = draw_real(chain, jax.random.key(11), _hp(), args)
    graphdef, abstract = split_module(lm_config(static))
    fresh = init_state(jax.random.key(0), abstract, lm_config(static).depth)
    total, count = jax.jit(lambda s, d: chunked_nll(nnx.merge(graphdef, s), d, 32))(fresh,
                                                                                    real.test)
    assert float(total / count) > 5.3
    ce = runs["sweep"].metrics["cross_entropy"][:, 0]
    assert np.all(ce < 3.3), ce
    bpb = runs["sweep"].metrics["bits_per_byte"][:, 0]
    assert np.all(bpb > ce / np.log(2) * 0.95)  # a byte per target (plus EOS), in bits


def test_vmapped_chains_equal_separate_chains(runs):
    """K = 2 chains of one vmapped sweep equal 2 single-chain runs (relative 1e-4: batched
    matmuls may sum in another order over 400 Adam steps)."""
    for i, (_, m) in enumerate(runs["singles"]):
        for name in ("cross_entropy", "train_loss", "distinct_2", "mean_length"):
            np.testing.assert_allclose(runs["sweep"].metrics[name][i], np.asarray(m[name]),
                                       rtol=1e-4, err_msg=name)


def test_no_recompile_across_hyperparameters_and_generations(runs):
    """The sweep compiled two programs (generation 0 and ``advance``) for its generations, run
    one per call (traced start); another sweep with new lr / temperature / top_k / top_p
    values, seeds and root key compiles nothing. New values reuse the single-chain program."""
    assert runs["compiled"] == 2 and runs["sweep"].generation_chunk == 1
    before = len(compiling._EXECUTABLES)
    hp = {"lr": np.array([1e-3, 5e-3], np.float32), "temperature": np.array([0.5, 2.0],
                                                                            np.float32),
          "top_k": np.array([3.0, 0.0], np.float32), "top_p": np.array([0.5, 1.0], np.float32)}
    again = run_sweep(runs["static"], jax.random.key(12), [5, 6], hp, runs["args"],
                      generation_chunk=1)
    assert len(compiling._EXECUTABLES) == before
    assert not np.allclose(again.metrics["cross_entropy"], runs["sweep"].metrics["cross_entropy"])
    assert runs["single"]._cache_size() == 1
    runs["single"](jax.random.key(12), _hp(lr=1e-3, temperature=0.5, top_k=3.0, top_p=0.5),
                   runs["args"])
    assert runs["single"]._cache_size() == 1


def test_metrics_and_samples_are_well_formed(runs, tmp_path):
    state, metrics = runs["singles"][0]
    assert set(MODELS["transformer_lm"].metrics) <= set(metrics)
    for name, v in metrics.items():
        assert v.shape == (runs["static"].generations,) and v.dtype == jnp.float32, name
        assert np.all(np.isfinite(np.asarray(v))), name
    m = runs["sweep"].metrics
    np.testing.assert_allclose(m["perplexity"], np.exp(m["cross_entropy"]), rtol=1e-5)
    assert np.all((m["distinct_1"] > 0) & (m["distinct_3"] <= 1))
    static, chain, args = runs["static"], runs["chain"], runs["args"]
    real = draw_real(chain, jax.random.key(11), _hp(), args)
    model = make_model(static)
    docs = jax.jit(model.sample, static_argnums=4)(jax.random.key(13), state.params, real,
                                                   _hp(), 6)
    assert docs["tokens"].shape == (6, 32) and docs["tokens"].dtype == jnp.int32
    texts = decode_documents(jax.tree.map(np.asarray, docs), args)
    assert len(texts) == 6 and all(isinstance(t, str) for t in texts)
    host = jax.tree.map(np.asarray, docs)
    samples = {"replace": {0: host, 2: host}, "accumulate": {1: host}}
    path = write_samples_text(samples, args, tmp_path / "out" / "samples.txt", per_generation=2)
    body = path.read_text(encoding="utf-8")
    assert "=== regime replace, generation 0" in body and "generation 2" in body
    assert "=== regime accumulate, generation 1" in body
    assert all(" ".join(t.split())[:20] in " ".join(body.split()) for t in texts[:2])


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="heads=3"):
        validate(Experiment(name="x", model="transformer_lm", d=32,
                            options={"width": 32, "heads": 3}))
    with pytest.raises(ConfigError, match="^source='digits'"):
        validate(Experiment(name="x", model="transformer_lm", d=32, source="digits"))
    with pytest.raises(ConfigError, match="^d=3"):
        validate(Experiment(name="x", model="transformer_lm", d=3))
    with pytest.raises(ConfigError, match="top_p"):
        validate(Experiment(name="x", model="transformer_lm", d=32, hparams={"top_p": 0.0}))
