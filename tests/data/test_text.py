"""Text data: tokenizers (byte, cached BPE), corpora and their fixed splits, documents as token
rows, the text sources, and every bad input as a one-line ConfigError naming its field."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from collapse_jax import cli
from collapse_jax.config import ConfigError, StaticConfig
from collapse_jax.data import corpora, text
from collapse_jax.data.tokenize import bpe_cache_path, bpe_tokenizer, byte_tokenizer
from collapse_jax.model import make_source

STORIES = [
    "Once upon a time there was a little cat. The cat liked milk.",
    "Tom had a red ball. He played with it every day in the park.",
    "The sun was warm. Lily and her mom went to the sea to swim.",
    "A small bird sat on a tree. It sang a happy song for the girl.",
]


def _static(source="kjv", d=64, n0=16, n_test=8, data_path="", regime="replace", **options):
    opts = {"long_documents": "error", **options}
    return StaticConfig(model="transformer_lm", regime=regime, n0=n0, n=n0, d=d, generations=2,
                        n_test=n_test, source=source, data_path=data_path,
                        options=tuple(sorted(opts.items())))


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    """Each test loads corpora afresh and caches BPEs in its own directory."""
    monkeypatch.setenv("COLLAPSE_JAX_DATA_DIR", str(tmp_path / "data"))
    text.clear_cache()
    yield
    text.clear_cache()


def _load(static):
    return make_source(static).load(static)


# ----------------------------------------------------------------------------------------------
# Tokenizers


def test_byte_tokenizer_round_trip_and_specials():
    tok = byte_tokenizer()
    s = "In the beginning — ünïcode ✓"
    ids = tok.encode([s])[0]
    assert ids.dtype == np.int32 and ids.max() < 256 and len(ids) == len(s.encode())
    assert tok.decode(ids) == s
    assert (tok.bos, tok.eos, tok.pad, tok.vocab_size) == (256, 257, 258, 259)
    assert tok.decode([tok.bos, *ids, tok.eos, tok.pad]) == s


def test_bpe_is_trained_once_cached_atomically_and_decodes_exactly(tmp_path, monkeypatch):
    pytest.importorskip("tokenizers")
    from collapse_jax.data import tokenize

    calls = []
    real_train = tokenize.train_bpe
    monkeypatch.setattr(tokenize, "train_bpe", lambda t, v: calls.append(v) or real_train(t, v))
    corpus = STORIES * 5
    tok = bpe_tokenizer("stories", corpus, 300)
    path = bpe_cache_path("stories", corpus, 300)
    assert path.is_file() and path.parent.parent == tmp_path / "data"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no partial file
    assert calls == [300] and (tok.bos, tok.eos, tok.pad, tok.vocab_size) == (0, 1, 2, 300)
    ids = tok.encode(STORIES)
    assert all(tok.decode(i) == s for i, s in zip(ids, STORIES, strict=True))
    assert sum(map(len, ids)) < 0.7 * sum(len(s.encode()) for s in STORIES)  # merges compress
    again = bpe_tokenizer("stories", corpus, 300)  # from the cache: no second training
    assert calls == [300]
    assert all(np.array_equal(a, b) for a, b in zip(again.encode(STORIES), ids, strict=True))
    # negative control: another corpus (or size) is another cache entry, trained anew
    bpe_tokenizer("stories", corpus[:-1], 300)
    assert calls == [300, 300]
    # the byte table gives each token's exact bytes: bytes per text add up
    for i, s in zip(ids, STORIES, strict=True):
        assert int(tok.token_len[i].sum()) == len(s.encode())


def test_bpe_vocab_too_small_is_a_config_error():
    pytest.importorskip("tokenizers")
    with pytest.raises(ConfigError, match="bpe_vocab"):
        bpe_tokenizer("x", STORIES, 100)


# ----------------------------------------------------------------------------------------------
# Documents


def test_rows_fit_split_and_drop():
    tok = byte_tokenizer()
    docs = tok.encode(["abcdefghij", "xy"])
    with pytest.raises(ConfigError, match=r"^d=8: document 0 of here has 10 tokens"):
        text.fit_documents(docs, 8, "error", "here")
    pieces, dropped = text.fit_documents(docs, 8, "split", "here")
    assert dropped == 0 and [len(p) for p in pieces] == [6, 4, 2]
    assert np.array_equal(np.concatenate(pieces[:2]), docs[0])  # nothing lost
    kept, dropped = text.fit_documents(docs, 8, "drop", "here")
    assert dropped == 1 and [p.tolist() for p in kept] == [docs[1].tolist()]
    rows = text.to_rows(kept, 8, tok)
    assert rows["tokens"].tolist() == [[256, 120, 121, 257, 258, 258, 258, 258]]
    assert rows["length"].tolist() == [4]


def test_kjv_split_rule_documents_and_sizes():
    chapters = corpora.kjv_chapters()
    assert len(chapters) == 1189  # the Bible's chapters
    assert chapters[0][0] == "In the beginning God created the heavens and the earth."
    assert not any(ch[i][0].isdigit() and ":" in ch[i][:8] for ch in chapters
                   for i in range(len(ch)))  # verse numbers removed
    train, test = corpora.kjv_split()
    assert len(test) == 118 and len(train) == 1071 and test[0] == chapters[9]
    args = _load(_static(d=64, n_test=100))
    tr, te = args["train"], args["test"]
    assert tr["tokens"].shape[1] == 64 and te["tokens"].shape == (100, 64)
    assert tr["tokens"].dtype == np.int32 and tr["length"].dtype == np.int32
    assert tr["length"].max() <= 64 and tr["length"].min() >= 3
    assert np.all(tr["tokens"][:, 0] == 256)
    last = tr["tokens"][np.arange(len(tr["length"])), tr["length"] - 1]
    assert np.all(last == 257)  # every document ends with EOS, then padding
    mask = np.arange(64)[None, :] >= tr["length"][:, None]
    assert np.all(tr["tokens"][mask] == 258)
    # test text comes from held-out chapters only; test_bytes counts its UTF-8 bytes
    assert float(args["test_bytes"]) == sum(int(n) - 2 for n in te["length"])
    first_test = byte_tokenizer().decode(te["tokens"][0][: te["length"][0]])
    assert first_test in " ".join(test[0])  # the first held-out chapter, Genesis 10


def test_kjv_packs_consecutive_verses():
    tok = byte_tokenizer()
    ch = corpora.kjv_chapters()[0]
    docs = text.pack_units(ch, tok, 254)
    texts = [tok.decode(d) for d in docs]
    assert " ".join(texts) == " ".join(ch)  # the chapter, in order, nothing lost
    assert texts[0].startswith(ch[0] + " " + ch[1])  # several verses in one document
    assert max(len(d) for d in docs) <= 254


def test_text_files_rules(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "a-train.txt").write_text("first story\nline two\n\nsecond story\n\n\n")
    (d / "b-train.txt").write_text("third\n<|endoftext|>\nfourth has\n\na blank line\n"
                                   "<|endoftext|>\n")
    (d / "c.jsonl").write_text(json.dumps({"text": "fifth"}) + "\n\n"
                               + json.dumps({"text": "sixth", "id": 3}) + "\n")
    (d / "stories-valid.txt").write_text("held out one\n\nheld out two\n")
    train, test = corpora.text_files_split(str(d))
    assert train == ["first story\nline two", "second story", "third",
                     "fourth has\n\na blank line", "fifth", "sixth"]
    assert test == ["held out one", "held out two"]
    # one file and no test file: every 10th document is held out
    one = tmp_path / "one.txt"
    one.write_text("\n\n".join(f"doc {i}" for i in range(25)))
    train, test = corpora.text_files_split(str(one))
    assert test == ["doc 9", "doc 19"] and len(train) == 23


def test_text_files_source_draws_per_chain_subsets(tmp_path):
    one = tmp_path / "stories.txt"
    one.write_text("\n\n".join(f"{s} ({i})" for i in range(10) for s in STORIES))
    static = _static("text_files", d=80, n0=12, n_test=4, data_path=str(one))
    src = make_source(static)
    args = src.load(static)
    assert args["train"]["tokens"].shape == (36, 80) and args["test"]["tokens"].shape == (4, 80)
    draw = jax.jit(jax.vmap(src.draw, in_axes=(0, None, None)))
    real = draw(jax.random.split(jax.random.key(0), 3), {}, args)
    tr = np.asarray(real.train["tokens"])
    assert tr.shape == (3, 12, 80) and real.test["tokens"].shape == (3, 4, 80)
    assert not np.array_equal(tr[0], tr[1])
    pool_rows = {r.tobytes() for r in args["train"]["tokens"]}
    for c in range(3):  # each D0 is a subset of the training documents, without repeats
        rows = [r.tobytes() for r in tr[c]]
        assert set(rows) <= pool_rows and len(set(rows)) == len(rows)


def test_fresh_real_documents_come_from_the_training_split(tmp_path):
    """``Source.fresh`` (the ``fresh_real_mix`` regime) draws new real documents from the
    training split: rows of it, lengths with them; more than the split holds repeats some."""
    one = tmp_path / "stories.txt"
    one.write_text("\n\n".join(f"{s} ({i})" for i in range(10) for s in STORIES))
    static = _static("text_files", d=80, n0=12, n_test=4, data_path=str(one),
                     regime="fresh_real_mix")
    src = make_source(static)
    args = src.load(static)
    train = {r.tobytes(): int(n) for r, n in zip(args["train"]["tokens"],
                                                 args["train"]["length"], strict=True)}
    for num in (5, 50):  # fewer, then more, than the 36 training documents
        docs = jax.jit(lambda k, a, num=num: src.fresh(k, {}, a, None, num))(
            jax.random.key(1), args)
        rows = [r.tobytes() for r in np.asarray(docs["tokens"])]
        assert len(rows) == num and set(rows) <= set(train)
        assert [train[r] for r in rows] == np.asarray(docs["length"]).tolist()
        assert (len(set(rows)) == num) == (num <= len(train))


def test_long_documents_option(tmp_path):
    f = tmp_path / "long.txt"
    f.write_text("\n\n".join(["short one"] * 9 + ["x" * 50]))
    base = dict(source="text_files", d=20, n0=4, n_test=1, data_path=str(f))
    with pytest.raises(ConfigError,
                       match=r"^d=20: document 0 of the test split of text_files .* 50 tokens"):
        _load(_static(**base))
    args = _load(_static(**base, long_documents="split"))
    assert args["test"]["length"].tolist() == [20] and int(args["dropped"]) == 0  # 18 + 2
    text.clear_cache()
    with pytest.raises(ConfigError, match="n_test=1"):  # the only test document is dropped
        _load(_static(**base, long_documents="drop"))


@pytest.mark.parametrize("case,field", [
    ("missing", "data_path"), ("empty", "data_path"), ("no_files", "data_path"),
    ("bad_jsonl", "data_path"), ("n0", "n0"), ("n_test", "n_test"), ("unset", "data_path"),
])
def test_bad_text_inputs_are_one_line_config_errors(tmp_path, case, field):
    f = tmp_path / "c.txt"
    f.write_text("\n\n".join(f"doc {i}" for i in range(30)))
    kw = dict(source="text_files", d=16, n0=4, n_test=2, data_path=str(f))
    if case == "missing":
        kw["data_path"] = str(tmp_path / "nope.txt")
    elif case == "empty":
        (tmp_path / "e.txt").write_text("\n \n\n")
        kw["data_path"] = str(tmp_path / "e.txt")
    elif case == "no_files":
        (tmp_path / "dir").mkdir()
        kw["data_path"] = str(tmp_path / "dir")
    elif case == "bad_jsonl":
        (tmp_path / "b.jsonl").write_text('{"text": "ok"}\n{"txt": "no"}\n')
        kw["data_path"] = str(tmp_path / "b.jsonl")
    elif case == "n0":
        kw["n0"] = 1000
    elif case == "n_test":
        kw["n_test"] = 50
    elif case == "unset":
        kw["data_path"] = ""
    with pytest.raises(ConfigError, match=f"^{field}") as e:
        _load(_static(**kw))
    assert "\n" not in str(e.value)


def test_kjv_too_many_documents_asked():
    with pytest.raises(ConfigError, match="^n0=100000: source 'kjv' has"):
        _load(_static(d=64, n0=100_000))
    with pytest.raises(ConfigError, match="^n_test=100000"):
        _load(_static(d=64, n_test=100_000))


def test_cli_exits_2_naming_the_field(tmp_path, capsys):
    code = cli.main(["run", "configs/lm_tiny.py", "--set", "source=text_files", "--set",
                     f"data_path={tmp_path / 'missing.txt'}", "--dry-run", "--out",
                     str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "data_path=" in err and "no such file" in err
    assert len(err.strip().splitlines()) == 1
    code = cli.main(["run", "configs/lm_tiny.py", "--set", "d=2", "--dry-run", "--out",
                     str(tmp_path / "out")])
    assert code == 2 and capsys.readouterr().err.count("d=2") == 1


def test_tfds_text_through_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12, data_dir=str(tmp_path / "tfds")):
        static = _static("tfds_text", d=40, n0=6, n_test=4, data_path="lm1b",
                         long_documents="split")
        src = make_source(static)
        args = src.load(static)
        assert args["train"]["tokens"].shape[1] == 40 and args["test"]["tokens"].shape == (4, 40)
        real = jax.jit(src.draw)(jax.random.key(0), {}, args)
        assert real.train["tokens"].shape == (6, 40)
    text.clear_cache()


def test_tfds_text_missing_data_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="^data_path='lm1b': TFDS data not found.*never "
                                          "downloads"):
        _load(_static("tfds_text", d=40, data_path="lm1b"))


def test_tinystories_config_dry_run_prints_the_plan(tmp_path, capsys):
    """configs/lm_tinystories.py on a stand-in of the release's files (train/valid text with
    <|endoftext|> lines): the dry run prints the plan with memory per chain, compiling nothing;
    without the data it is one line naming data_path, exit 2."""
    pytest.importorskip("tokenizers")
    d = tmp_path / "tinystories"
    d.mkdir()
    story = "One day a {} dog found a ball. The dog was happy and played all day."
    (d / "TinyStories-train.txt").write_text(
        "\n<|endoftext|>\n".join(story.format(w) for w in ("big", "small", "red") * 20))
    (d / "TinyStories-valid.txt").write_text(
        "\n<|endoftext|>\n".join(story.format(w) for w in ("old", "new") * 4))
    argv = ["run", "configs/lm_tinystories.py", "--set", f"data_path={d}", "--set", "n=40",
            "--set", "n_test=4", "--set", "options.bpe_vocab=300", "--dry-run", "--out",
            str(tmp_path / "out")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "plan for 'lm_tinystories'" in out and "mem/chain" in out and "accumulate" in out
    argv[3] = f"data_path={tmp_path / 'absent'}"
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "data_path=" in err and "no such file" in err
