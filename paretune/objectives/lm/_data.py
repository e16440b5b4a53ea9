"""The lm objective's tokens: a text corpus as one token stream, its held-out tail, and the
seeded order of training windows."""

from __future__ import annotations

import bz2
import gzip
import lzma
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from paretune._errors import ConfigError
from paretune.objectives._paths import resolve_file

__all__ = ["BYTES", "Corpus", "load_corpus", "read_text", "train_windows", "validation_windows"]

#: The byte-level tokenizer: each UTF-8 byte is a token (vocabulary 256).
BYTES = "bytes"

_OPENERS: dict[str, Callable[..., Any]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


@dataclass(frozen=True)
class Corpus:
    """A corpus as token ids.

    Attributes:
        train: `n_train` token ids the training windows are drawn from.
        validation: `n_val` held-out token ids (the tail of each file).
        vocab_size: The tokenizer's vocabulary size.
    """

    train: np.ndarray
    validation: np.ndarray
    vocab_size: int


def read_text(path: Path) -> str:
    """A text file's contents; ``.gz``, ``.bz2`` and ``.xz`` are decompressed."""
    opener = _OPENERS.get(path.suffix.lower())
    if opener is None:
        return path.read_text(encoding="utf-8", errors="replace")
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        return str(handle.read())


_cache: dict[tuple[tuple[str, ...], str, float], Corpus] = {}
_cache_lock = threading.Lock()


def load_corpus(files: Sequence[str], tokenizer: str, validation_fraction: float) -> Corpus:
    """The corpus of ``files`` (found under the working directory or ``$PARETUNE_DATA_DIR``),
    tokenised, with the last ``validation_fraction`` of each file held out.

    Held out per file, so every source is in both splits and the split does not depend on
    the order the files are listed in. Loaded once per process and kept (trials of one
    worker share it).

    Raises:
        ConfigError: A file does not exist, a split would be empty, or the tokenizer does not
            load.
    """
    paths = tuple(str(resolve_file(name, "data")) for name in files)
    key = (paths, tokenizer, validation_fraction)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = _load(paths, tokenizer, validation_fraction)
        return _cache[key]


def _load(paths: tuple[str, ...], tokenizer: str, validation_fraction: float) -> Corpus:
    encode, vocab_size = _encoder(tokenizer)
    train, validation = [], []
    for path in paths:
        ids = encode(read_text(Path(path)))
        cut = len(ids) - round(len(ids) * validation_fraction)
        train.append(ids[:cut])
        validation.append(ids[cut:])
    corpus = Corpus(
        train=np.concatenate(train), validation=np.concatenate(validation), vocab_size=vocab_size
    )
    if min(len(corpus.train), len(corpus.validation)) < 2:
        raise ConfigError(
            f"the corpus has {len(corpus.train)} training and {len(corpus.validation)} "
            f"validation tokens; give more text or another validation_fraction.",
            path=("data",),
        )
    return corpus


def _encoder(tokenizer: str) -> tuple[Callable[[str], np.ndarray], int]:
    """The function that turns text into token ids, and the vocabulary's size."""
    if tokenizer == BYTES:
        return _bytes, 256
    from transformers import AutoTokenizer

    try:
        loaded = AutoTokenizer.from_pretrained(tokenizer)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"cannot load the tokenizer {tokenizer!r}: {err}", path=("tokenizer",)
        ) from None

    def encode(text: str) -> np.ndarray:
        return np.asarray(loaded(text, add_special_tokens=False)["input_ids"], dtype=np.int64)

    return encode, len(loaded)


def _bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)


def train_windows(
    corpus: Corpus, *, seed: int, steps: int, batch_size: int, length: int
) -> np.ndarray:
    """The start of each training window, `steps x batch_size`, drawn from ``seed`` alone.

    The order depends on nothing else (not the width, the parametrization or the learning
    rate), so runs that share a seed see the same data in the same order.
    """
    high = len(corpus.train) - length - 1
    if high <= 0:
        raise ConfigError(
            f"the training text has {len(corpus.train)} tokens, fewer than one window of "
            f"{length + 1}; shorten sequence_length or give more text.",
            path=("sequence_length",),
        )
    rng = np.random.default_rng(seed)
    # Starts in [0, high): the one window ending at the last token is never drawn, which
    # keeps the data order of results recorded so far (benchmarks/results).
    return rng.integers(0, high, size=(steps, batch_size))


def validation_windows(corpus: Corpus, *, count: int, length: int) -> np.ndarray:
    """`count` evenly spaced starts of validation windows: the same for every run."""
    high = len(corpus.validation) - length - 1
    if high < 0:
        raise ConfigError(
            f"the validation text has {len(corpus.validation)} tokens, fewer than one window "
            f"of {length + 1}; raise validation_fraction or shorten sequence_length.",
            path=("validation_fraction",),
        )
    return np.linspace(0, high, num=count).astype(np.int64)


def gather(tokens: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """The windows of ``length + 1`` tokens at ``starts``, `len(starts) x (length + 1)`."""
    return tokens[starts[:, None] + np.arange(length + 1)[None, :]]
