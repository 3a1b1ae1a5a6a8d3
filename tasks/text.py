"""Corpora and tokenisers for the language tasks.

Corpus sources (``task.corpus.source``), none of which downloads anything:

- ``pydoc``: the English help topics that ship with every CPython (``pydoc_data.topics``,
  about 465 K characters), joined in sorted topic order;
- ``text``: a UTF-8 text file, or a directory whose ``*.txt`` files are joined in name order;
- ``dataset``: a HuggingFace ``datasets`` dataset written with ``save_to_disk`` (a Dataset, or a
  DatasetDict from which ``corpus.split`` is taken), whose ``corpus.text_column`` rows are joined.

The corpus is one string split deterministically into a leading training part and a trailing
validation part (``corpus.val_fraction`` of the characters): contiguous parts, so no validation
sentence appears in training.

Tokenisers (``task.tokenizer.kind``):

- ``char``: one id per distinct character of the whole corpus (sorted by code point);
- ``bpe``: byte-level BPE trained with ``tokenizers`` on the training split only, cached on disk
  under ``tokenizer.cache_dir`` (a folder inside the cache root ``$BENCH_CACHE``, default
  ``~/.cache/warmup-bench``) in a file named by the SHA-256 of the training text and settings,
  so a sweep trains it once and every job reuses it.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import torch
from omegaconf import DictConfig

from bench.errors import ConfigError, bad
from tasks import checks

SOURCES = ("pydoc", "text", "dataset")
KINDS = ("char", "bpe")
BYTE_ALPHABET = 256  # byte-level BPE starts from all 256 bytes, so no vocabulary can be smaller
CACHE_VERSION = 1  # bump when the cache file format or the training recipe changes


TEXT_PATH = "an existing UTF-8 text file or a directory of *.txt files (nothing is downloaded: put the corpus there)"
DATASET_PATH = "a directory written by datasets' save_to_disk (nothing is downloaded: save the dataset there first)"


# ---------------------------------------------------------------- checks


def check_corpus_config(corpus_cfg: DictConfig, tok_cfg: DictConfig) -> None:
    """Every ``task.corpus.*`` and ``task.tokenizer.*`` check that needs no corpus: types, ranges, and
    whether ``corpus.path`` exists as the right kind of path (one ``stat``).

    What needs the text stays in :func:`build_corpus`: both splits non-empty, a char vocabulary
    that covers the character set, and the readers' own checks of a file's contents. A binary
    file is caught here already by :func:`sniff_text` (the first few KB of each file).
    """
    checks.number_in("task.corpus.val_fraction", corpus_cfg.val_fraction, 0, 1, "a fraction in (0, 1)", low_open=True, high_open=True)
    source = checks.choice("task.corpus.source", corpus_cfg.source, SOURCES)
    if source != "pydoc":
        path = corpus_cfg.path
        if path is None:
            raise bad("task.corpus.path", None, f"a local path: corpus.source={source} reads from disk")
        checks.text("task.corpus.path", path, TEXT_PATH if source == "text" else DATASET_PATH)
        if source == "text" and not os.path.exists(os.path.expanduser(path)):
            raise bad("task.corpus.path", path, TEXT_PATH)
        if source == "text":
            sniff_text(path)
        if source == "dataset":
            if not os.path.isdir(os.path.expanduser(path)):
                raise bad("task.corpus.path", path, DATASET_PATH)
            checks.text("task.corpus.split", corpus_cfg.split, "the name of a saved split, e.g. train")
            checks.text("task.corpus.text_column", corpus_cfg.text_column, "the name of the dataset's text column, e.g. text")
    kind = checks.choice("task.tokenizer.kind", tok_cfg.kind, KINDS)
    vs = checks.int_at_least("task.tokenizer.vocab_size", tok_cfg.vocab_size, 1, "an integer >= 1, or null", allow_none=True)
    if kind == "bpe":
        if vs is None or vs <= BYTE_ALPHABET:
            raise bad("task.tokenizer.vocab_size", vs, f"an integer > {BYTE_ALPHABET} for byte-level BPE (its base alphabet is the {BYTE_ALPHABET} bytes)")
        checks.int_at_least("task.tokenizer.min_frequency", tok_cfg.min_frequency, 1)
        checks.relative_path("task.tokenizer.cache_dir", tok_cfg.cache_dir, f"a folder name under the cache root (${checks.CACHE_ENV}, default {checks.DEFAULT_CACHE}): no absolute path, no '..'")


# ---------------------------------------------------------------- corpora


def pydoc_text() -> str:
    """CPython's bundled help topics as one string (topics joined by blank lines, sorted by name)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k].strip() for k in sorted(topics)) + "\n"


SNIFF_BYTES = 8192  # enough to tell text from an image, an archive or a tensor file
SNIFF_FILES = 16  # a directory's first files in name order; the read checks them all


def _not_text(data: bytes, final: bool) -> str | None:
    """Why ``data`` is not UTF-8 text (a NUL byte, or the offset of the first invalid byte), or None.

    ``final=False``: ``data`` is the head of a longer file, so a character cut at its end is fine.
    """
    nul = data.find(b"\0")
    if nul >= 0:
        return f"it holds a NUL byte at offset {nul}: a binary file"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=final)
    except UnicodeDecodeError as e:
        return f"byte {e.start} is not UTF-8"
    return None


def sniff_text(path: str) -> None:
    """Refuse a ``corpus.path`` whose file(s) do not start as UTF-8 text (reads at most 8 KB of the first 16 files)."""
    p = Path(path).expanduser()
    files = sorted(p.glob("*.txt"))[:SNIFF_FILES] if p.is_dir() else [p]
    for f in files:
        try:
            with open(f, "rb") as fh:
                head = fh.read(SNIFF_BYTES + 1)
        except OSError as e:
            raise bad("task.corpus.path", path, f"a readable text file ({f}: {e.strerror or e})") from None
        why = _not_text(head[:SNIFF_BYTES], final=len(head) <= SNIFF_BYTES)
        if why is not None:
            raise bad("task.corpus.path", path, f"UTF-8 text; {f.name}: {why}")


def read_text_path(path: str) -> str:
    """A UTF-8 file, or the ``*.txt`` files of a directory joined in name order."""
    p = Path(path).expanduser()
    if not p.exists():
        raise bad("task.corpus.path", path, TEXT_PATH)
    files = sorted(p.glob("*.txt")) if p.is_dir() else [p]
    if not files:
        raise bad("task.corpus.path", path, "a directory that holds at least one *.txt file, or a text file")
    parts = []
    for f in files:
        try:
            parts.append(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise bad("task.corpus.path", path, f"UTF-8 text; {f.name}: byte {e.start} is not UTF-8") from None
    text = "\n".join(parts)
    if not text.strip():
        raise bad("task.corpus.path", path, "a non-empty text file (this one holds no text)")
    return text


def read_saved_dataset(path: str, split: str, column: str) -> str:
    """The ``column`` rows of a ``save_to_disk`` dataset (``split`` of a DatasetDict), newline-joined."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise bad("task.corpus.path", path, DATASET_PATH)
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except FileNotFoundError as e:
        raise bad("task.corpus.path", path, f"a directory written by datasets' save_to_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise bad("task.corpus.split", split, f"one of the saved splits {', '.join(ds)}")
        ds = ds[split]
    if column not in ds.column_names:
        raise bad("task.corpus.text_column", column, f"one of the dataset's columns {', '.join(ds.column_names)}")
    text = "\n".join(t for t in ds[column] if t)
    if not text.strip():
        raise bad("task.corpus.path", path, f"a dataset whose column {column!r} holds some text (it is empty)")
    return text


def load_corpus(cfg: DictConfig) -> str:
    """The whole corpus named by the ``task.corpus`` node (checked by :func:`check_corpus_config`)."""
    if cfg.source == "pydoc":
        return pydoc_text()
    if cfg.source == "text":
        return read_text_path(cfg.path)
    return read_saved_dataset(cfg.path, cfg.split, cfg.text_column)


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """Leading ``1 - val_fraction`` of the characters for training, the rest for validation."""
    cut = len(text) - round(len(text) * val_fraction)
    return text[:cut], text[cut:]


# ---------------------------------------------------------------- tokenisers


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class CharTokenizer:
    """One id per character; ``vocab_size`` may exceed the character set (unused ids pad the embedding)."""

    def __init__(self, chars: str, vocab_size: int | None = None):
        self.chars = "".join(sorted(set(chars)))
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.vocab_size = vocab_size or len(self.chars)

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i] for i in ids)


class BPETokenizer:
    """A trained byte-level BPE from ``tokenizers`` (lossless on any UTF-8 text)."""

    def __init__(self, tok):
        self.tok = tok
        self.vocab_size = tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids))


def bpe_cache_key(train_text: str, vocab_size: int, min_frequency: int) -> str:
    """SHA-256 over the training text, the settings and the ``tokenizers`` version (first 16 hex digits)."""
    import tokenizers

    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "vocab": vocab_size, "min_freq": min_frequency, "lib": tokenizers.__version__}).encode())
    h.update(train_text.encode("utf-8"))
    return h.hexdigest()[:16]


def train_bpe(train_text: str, vocab_size: int, min_frequency: int, cache_dir: str) -> tuple[BPETokenizer, Path, bool]:
    """Byte-level BPE for ``train_text``: loaded from the cache if present, else trained and cached.

    Returns ``(tokenizer, cache file, loaded_from_cache)``. The file is written to a temporary
    name and renamed, so parallel jobs that train the same tokenizer never read a partial file.
    """
    from tokenizers import ByteLevelBPETokenizer, Tokenizer as HFTokenizer

    root = Path(cache_dir).expanduser()
    path = root / f"bpe-{vocab_size}-{bpe_cache_key(train_text, vocab_size, min_frequency)}.json"
    if path.exists():
        return BPETokenizer(HFTokenizer.from_file(str(path))), path, True
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(_chunks(train_text), vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False)
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, suffix=".tmp")
    os.close(fd)
    tok.save(tmp)
    os.replace(tmp, path)
    return BPETokenizer(HFTokenizer.from_file(str(path))), path, False


def _chunks(text: str):
    """The trainer reads an iterator of strings; lines keep word statistics intact across chunks."""
    lines = text.splitlines(keepends=True)
    for i in range(0, len(lines), 1024):
        yield "".join(lines[i : i + 1024])


@dataclass
class Corpus:
    """Token ids of both splits on ``device`` plus what the record should say about them."""

    train_ids: torch.Tensor  # int64 (N_train,)
    val_ids: torch.Tensor  # int64 (N_val,)
    tokenizer: Tokenizer
    train_chars: int
    val_chars: int
    info: dict


def build_corpus(corpus_cfg: DictConfig, tok_cfg: DictConfig, device: torch.device) -> Corpus:
    """Load, split and tokenise settings that passed :func:`check_corpus_config`; what only the text
    can tell (empty splits, a char vocabulary smaller than the character set) raises ConfigError here."""
    vf, vs = corpus_cfg.val_fraction, tok_cfg.vocab_size
    text = load_corpus(corpus_cfg)
    train_text, val_text = split_text(text, vf)
    if not train_text or not val_text:
        raise bad("task.corpus.val_fraction", vf, f"a fraction that leaves text in both splits (the corpus has {len(text)} characters)")
    info = {"corpus": corpus_cfg.source, "tokenizer": tok_cfg.kind}
    if tok_cfg.kind == "char":
        charset = len(set(text))
        if vs is not None and vs < charset:
            raise bad("task.tokenizer.vocab_size", vs, f"at least the corpus's character set of {charset} (or null to use it)")
        tok: Tokenizer = CharTokenizer(text, vs)
    else:
        tok, path, cached = train_bpe(train_text, vs, tok_cfg.min_frequency, str(checks.cache_path(tok_cfg.cache_dir)))
        info.update(tokenizer_file=str(path), tokenizer_cached=cached)
    train_ids = torch.tensor(tok.encode(train_text), dtype=torch.int64, device=device)
    val_ids = torch.tensor(tok.encode(val_text), dtype=torch.int64, device=device)
    info.update(vocab_size=tok.vocab_size, train_chars=len(train_text), val_chars=len(val_text), train_tokens=len(train_ids), val_tokens=len(val_ids))
    return Corpus(train_ids, val_ids, tok, len(train_text), len(val_text), info)


def check_context(context_length: int, corpus: Corpus, extra: int) -> None:
    """Both splits must hold at least one block of ``context_length + extra`` tokens (an integer >= 2, checked before)."""
    need = context_length + extra
    shortest = min(len(corpus.train_ids), len(corpus.val_ids))
    if need > shortest:
        which = "validation" if len(corpus.val_ids) < len(corpus.train_ids) else "training"
        raise bad(
            "task.context_length",
            context_length,
            f"at most {shortest - extra} tokens: the {which} split holds only {shortest} tokens (use a larger corpus or corpus.val_fraction)",
        )


def lm_blocks(ids: torch.Tensor, context: int, offset: int = 0) -> torch.Tensor:
    """(n, context + 1) windows starting at ``offset + i * context``: inputs ``[:, :-1]``, targets ``[:, 1:]``.

    Consecutive windows share their boundary token, so each token after ``offset`` is a target once.
    """
    return ids[offset:].unfold(0, context + 1, context)


def mlm_blocks(ids: torch.Tensor, context: int, offset: int = 0) -> torch.Tensor:
    """(n, context) disjoint windows starting at ``offset + i * context``."""
    return ids[offset:].unfold(0, context, context)
