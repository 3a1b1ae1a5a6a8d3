"""Corpora and tokenisers for the language tasks.

Corpus sources (``task.corpus.source``), none of which downloads anything:

- ``pydoc``: the English help topics that ship with every CPython (``pydoc_data.topics``,
  about 465 K characters), joined in sorted topic order;
- ``text``: a UTF-8 text file, or a directory whose ``*.txt`` files are joined in name order;
- ``dataset``: a HuggingFace ``datasets`` dataset written with ``save_to_disk`` (a Dataset, or a
  DatasetDict from which ``corpus.split`` is taken), whose ``corpus.text_column`` rows are joined.

The corpus is one string cut into ``corpus.pieces`` contiguous pieces of equal length (to one
character). A generator seeded by ``corpus.split_seed`` (never the run's seed) picks
``round(pieces * val_fraction)`` of them for validation and ``round(pieces * test_fraction)`` for
test (at least one each); the rest, in corpus order, is the training text. Neighbouring pieces of
one split form one *run*; each run is tokenised on its own and a split's runs are joined in corpus
order, so no token and no window ever holds text of two splits (a window may span the seam of two
runs of one split).

Tokenisers (``task.tokenizer.kind``):

- ``char``: one id per distinct character of the whole corpus (sorted by code point): the
  character set only, so that every held-out character has an id; no statistics of held-out text;
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

    What needs the text stays in :func:`build_corpus`: every split non-empty, a char vocabulary
    that covers the character set, and the readers' own checks of a file's contents. A binary
    file is caught here already by :func:`sniff_text` (the first few KB of each file).
    """
    pieces = checks.int_at_least("task.corpus.pieces", corpus_cfg.pieces, 3, "an integer >= 3 (one piece at least for each of train, validation, test)")
    vf = checks.number_in("task.corpus.val_fraction", corpus_cfg.val_fraction, 0, 1, "a fraction in (0, 1)", low_open=True, high_open=True)
    tf = checks.number_in("task.corpus.test_fraction", corpus_cfg.test_fraction, 0, 1, "a fraction in (0, 1)", low_open=True, high_open=True)
    n_train, n_val, n_test = split_counts(pieces, vf, tf)
    if n_train < 1:
        raise bad(
            "task.corpus.test_fraction",
            tf,
            f"a fraction that leaves training text: with corpus.pieces={pieces} and corpus.val_fraction={vf}, "
            f"{n_val} validation + {n_test} test pieces take every piece (lower a fraction or raise corpus.pieces)",
        )
    checks.int_at_least("task.corpus.split_seed", corpus_cfg.split_seed, 0)
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


SPLITS = ("train", "val", "test")


def split_counts(pieces: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, validation, test) pieces: ``max(1, round(pieces * fraction))`` for each held-out split,
    the rest for training (< 1 when the fractions take every piece; :func:`check_corpus_config` refuses that)."""
    n_val = max(1, round(pieces * val_fraction))
    n_test = max(1, round(pieces * test_fraction))
    return pieces - n_val - n_test, n_val, n_test


def assign_pieces(pieces: int, val_fraction: float, test_fraction: float, split_seed: int) -> list[str]:
    """The split (``"train"``, ``"val"`` or ``"test"``) of each piece, in corpus order.

    A permutation of the pieces drawn from a generator seeded by ``split_seed``: its first
    ``n_val`` pieces go to validation, the next ``n_test`` to test (see :func:`split_counts`), so a
    different ``test_fraction`` keeps the validation pieces.
    """
    _, n_val, n_test = split_counts(pieces, val_fraction, test_fraction)
    order = torch.randperm(pieces, generator=torch.Generator().manual_seed(split_seed)).tolist()
    names = ["train"] * pieces
    for rank, piece in enumerate(order[: n_val + n_test]):
        names[piece] = "val" if rank < n_val else "test"
    return names


def split_spans(n_chars: int, names: Sequence[str]) -> dict[str, list[tuple[int, int]]]:
    """Character spans ``[start, end)`` of each split's runs, in corpus order.

    Piece ``i`` of ``k = len(names)`` covers ``[i * n_chars // k, (i + 1) * n_chars // k)``, so piece
    lengths differ by at most one character; neighbouring pieces of one split merge into one run.
    """
    k = len(names)
    out: dict[str, list[tuple[int, int]]] = {name: [] for name in SPLITS}
    for i, name in enumerate(names):
        start, end = i * n_chars // k, (i + 1) * n_chars // k
        runs = out[name]
        if i and names[i - 1] == name:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return out


def split_text(text: str, pieces: int, val_fraction: float, test_fraction: float, split_seed: int) -> dict[str, list[str]]:
    """``{"train": runs, "val": runs, "test": runs}``: each split's runs of text in corpus order (see the module docstring)."""
    spans = split_spans(len(text), assign_pieces(pieces, val_fraction, test_fraction, split_seed))
    return {name: [text[a:b] for a, b in runs] for name, runs in spans.items()}


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
    """Token ids of the three splits on ``device`` plus what the record should say about them."""

    train_ids: torch.Tensor  # int64 (N_train,)
    val_ids: torch.Tensor  # int64 (N_val,)
    test_ids: torch.Tensor  # int64 (N_test,)
    tokenizer: Tokenizer
    train_chars: int
    val_chars: int
    test_chars: int
    info: dict

    def ids(self, split: str) -> torch.Tensor:
        """Token ids of ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        return {"train": self.train_ids, "val": self.val_ids, "test": self.test_ids}[split]


def build_corpus(corpus_cfg: DictConfig, tok_cfg: DictConfig, device: torch.device) -> Corpus:
    """Load, split and tokenise settings that passed :func:`check_corpus_config`; what only the text
    can tell (an empty split, a char vocabulary smaller than the character set) raises ConfigError here.
    The tokeniser learns from the training runs only (BPE); a char vocabulary is the whole corpus's character set."""
    vs = tok_cfg.vocab_size
    text = load_corpus(corpus_cfg)
    if corpus_cfg.pieces > len(text):
        raise bad("task.corpus.pieces", corpus_cfg.pieces, f"at most the corpus's {len(text)} characters, so that every piece holds text")
    names = assign_pieces(corpus_cfg.pieces, corpus_cfg.val_fraction, corpus_cfg.test_fraction, corpus_cfg.split_seed)
    spans = split_spans(len(text), names)
    runs = {name: [text[a:b] for a, b in spans[name]] for name in SPLITS}
    chars = {name: sum(map(len, runs[name])) for name in SPLITS}
    info = {
        "corpus": corpus_cfg.source,
        "tokenizer": tok_cfg.kind,
        "split_seed": corpus_cfg.split_seed,
        "pieces": corpus_cfg.pieces,
        "val_pieces": [i for i, n in enumerate(names) if n == "val"],
        "test_pieces": [i for i, n in enumerate(names) if n == "test"],
    }
    if tok_cfg.kind == "char":
        charset = len(set(text))
        if vs is not None and vs < charset:
            raise bad("task.tokenizer.vocab_size", vs, f"at least the corpus's character set of {charset} (or null to use it)")
        tok: Tokenizer = CharTokenizer(text, vs)
    else:
        tok, path, cached = train_bpe("".join(runs["train"]), vs, tok_cfg.min_frequency, str(checks.cache_path(tok_cfg.cache_dir)))
        info.update(tokenizer_file=str(path), tokenizer_cached=cached)
    ids = {name: torch.tensor([i for run in runs[name] for i in tok.encode(run)], dtype=torch.int64, device=device) for name in SPLITS}
    info["vocab_size"] = tok.vocab_size
    info.update({f"{name}_chars": chars[name] for name in SPLITS})
    info.update({f"{name}_tokens": len(ids[name]) for name in SPLITS})
    return Corpus(ids["train"], ids["val"], ids["test"], tok, chars["train"], chars["val"], chars["test"], info)


SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test"}


def check_context(context_length: int, corpus: Corpus, extra: int) -> None:
    """Every split must hold at least one block of ``context_length + extra`` tokens (an integer >= 2, checked before)."""
    need = context_length + extra
    sizes = {name: len(corpus.ids(name)) for name in ("val", "test", "train")}  # a tie names a held-out split
    which = min(sizes, key=sizes.get)
    shortest = sizes[which]
    if need > shortest:
        raise bad(
            "task.context_length",
            context_length,
            f"at most {shortest - extra} tokens: the {SPLIT_WORDS[which]} split holds only {shortest} tokens "
            "(use a larger corpus, fewer corpus.pieces or larger fractions)",
        )


def lm_blocks(ids: torch.Tensor, context: int, offset: int = 0) -> torch.Tensor:
    """(n, context + 1) windows starting at ``offset + i * context``: inputs ``[:, :-1]``, targets ``[:, 1:]``.

    Consecutive windows share their boundary token, so each token after ``offset`` is a target once.
    """
    return ids[offset:].unfold(0, context + 1, context)


def mlm_blocks(ids: torch.Tensor, context: int, offset: int = 0) -> torch.Tensor:
    """(n, context) disjoint windows starting at ``offset + i * context``."""
    return ids[offset:].unfold(0, context, context)
