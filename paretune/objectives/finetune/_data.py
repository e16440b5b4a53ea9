"""Text classification data for the finetune objective: check, split, label, tokenise.

Everything here works on plain pandas frames and lists; torch and transformers are not
imported. The objective builds a :class:`DataSettings` from its settings, calls
:func:`load_data` once per process and keeps the result; files and hub datasets are read by
:mod:`._files`.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from paretune._errors import ConfigError, describe
from paretune.objectives.finetune._files import is_local, read_hub, read_table, resolve_file

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_FRACTIONS",
    "SPLITS",
    "DataSettings",
    "LabelledData",
    "TokenCache",
    "load_data",
]

_log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS: Mapping[str, float] = {"train": 0.8, "validation": 0.1, "test": 0.1}
_TOKENIZE_CHUNK = 2048


@dataclass(frozen=True)
class DataSettings:
    """Where the data comes from and how it is read and split (validated by the objective).

    Attributes:
        data: One source split by ``fractions``: a local file or a hub dataset name.
        dataset_config: The hub dataset's configuration (subset) name.
        files: Explicit split files, ``{"train": ..., "validation": ..., "test": ...}``
            (test optional); used when ``data`` is ``None``.
        text_column: Column of the texts.
        label_column: Column of the labels (strings or integers).
        group_column: Column of groups that must not be split across train/validation/test.
        fractions: Split fractions of ``data``; they sum to 1, a test fraction of 0 means no
            test split.
        stratify: Keep the label proportions in each split (without ``group_column``).
        seed: Seeds the split and the order in which subsets are taken.
    """

    data: str | None
    dataset_config: str | None
    files: Mapping[str, str]
    text_column: str
    label_column: str
    group_column: str | None
    fractions: Mapping[str, float]
    stratify: bool
    seed: int


@dataclass
class LabelledData:
    """Texts and label ids per split, each split in a fixed random order.

    Taking the first ``n`` rows of a split is a random subset that is the same for every trial
    (the order is seeded by ``data_seed``), and smaller subsets are nested in larger ones.

    Attributes:
        texts: Split name to texts.
        labels: Split name to label ids in ``0..K-1`` (``int64``).
        label_names: The ``K`` labels as strings, in id order (sorted values).
        groups: Split name to group values, when the data was split by groups.
        source: A short description of where the data came from, for messages.
    """

    texts: dict[str, list[str]]
    labels: dict[str, np.ndarray]
    label_names: tuple[str, ...]
    groups: dict[str, np.ndarray] | None = None
    source: str = ""

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(s for s in SPLITS if s in self.texts)

    def size(self, split: str) -> int:
        return len(self.texts[split])

    def summary(self) -> str:
        sizes = ", ".join(f"{self.size(s)} {s}" for s in self.splits)
        return f"{sizes} rows, {self.num_labels} labels {list(self.label_names)} from {self.source}"


def load_data(settings: DataSettings) -> LabelledData:
    """Read, check, split and label the data ``settings`` describe.

    Raises:
        ConfigError: A file cannot be found or read, a column is missing (the message lists the
            columns there are), the data or a split is empty, or there are fewer than two
            labels; the path names the setting.
    """
    if settings.data is not None:
        if is_local(settings.data):
            path = resolve_file(settings.data, "data")
            frame = read_table(path, "data")
            frames = _split(_checked(frame, settings, str(path), "data"), settings)
            source = str(path)
        else:
            hub_frames = read_hub(settings.data, settings.dataset_config, settings.label_column)
            source = f"hub dataset {settings.data!r}"
            if "train" in hub_frames and "validation" in hub_frames:
                frames = {
                    split: _checked(hub_frames[split], settings, f"{source} [{split}]", "data")
                    for split in SPLITS
                    if split in hub_frames
                }
            else:
                import pandas as pd

                joined = pd.concat(list(hub_frames.values()), ignore_index=True)
                frames = _split(_checked(joined, settings, source, "data"), settings)
    else:
        frames = {}
        for split in SPLITS:
            if split not in settings.files:
                continue
            path = resolve_file(settings.files[split], split)
            frames[split] = _checked(read_table(path, split), settings, str(path), split)
        source = ", ".join(f"{s}={settings.files[s]}" for s in frames)
    return _labelled(frames, settings, source)


def _checked(
    frame: pd.DataFrame, settings: DataSettings, source: str, setting: str
) -> pd.DataFrame:
    """``frame`` reduced to text, label (and group) with complete rows, or a ConfigError."""
    columns = {"text_column": settings.text_column, "label_column": settings.label_column}
    if settings.group_column is not None:
        columns["group_column"] = settings.group_column
    for name, column in columns.items():
        if column not in frame.columns:
            raise ConfigError(
                f"the column {column!r} is not in {source}; its columns are "
                f"{[str(c) for c in frame.columns]}. Set `{name}` to one of them.",
                path=(name,),
            )
    if len(frame) == 0:
        raise ConfigError(f"{source} has no rows.", path=(setting,))
    kept = frame[list(columns.values())]
    complete = kept.dropna(subset=[settings.text_column, settings.label_column])
    if len(complete) == 0:
        raise ConfigError(
            f"{source} has {len(frame)} rows, but none with both a text "
            f"({settings.text_column!r}) and a label ({settings.label_column!r}).",
            path=(setting,),
        )
    if len(complete) < len(kept):
        _log.info(
            "%s: left out %d of %d rows without a text or a label",
            source,
            len(kept) - len(complete),
            len(kept),
        )
    return complete.reset_index(drop=True)


def _split(frame: pd.DataFrame, settings: DataSettings) -> dict[str, pd.DataFrame]:
    """``frame`` split by ``settings.fractions``: by groups, stratified by label, or at random."""
    n = len(frame)
    rng = np.random.default_rng(settings.seed)
    fractions = np.array([settings.fractions.get(s, 0.0) for s in SPLITS])
    bounds = np.cumsum(fractions)
    bounds[-1] = 1.0  # rounding must not leave rows beyond the last split
    assignment = np.empty(n, dtype=np.int64)
    if settings.group_column is not None:
        assignment = _split_groups(frame[settings.group_column], bounds, rng)
    elif settings.stratify:
        labels = _normalised(frame[settings.label_column].tolist())
        for value in sorted(set(labels)):
            rows = rng.permutation(np.flatnonzero(np.array([v == value for v in labels])))
            assignment[rows] = _cut(len(rows), bounds)
    else:
        assignment[rng.permutation(n)] = _cut(n, bounds)
    out: dict[str, pd.DataFrame] = {}
    for i, split in enumerate(SPLITS):
        if fractions[i] == 0:
            continue
        part = frame[assignment == i].reset_index(drop=True)
        if len(part) == 0:
            how = "by groups" if settings.group_column is not None else "at random"
            raise ConfigError(
                f"the {split} split is empty: {n} rows split {how} by the fractions "
                f"{dict(settings.fractions)} leave none for it. Give it a larger fraction, or "
                "more data.",
                path=("split_fractions", split),
            )
        out[split] = part
    return out


def _cut(n: int, bounds: np.ndarray) -> np.ndarray:
    """Split ids for ``n`` rows in order: the first ``round(b0 n)`` train, and so on."""
    cuts = np.round(bounds * n).astype(np.int64)
    return np.searchsorted(cuts, np.arange(n), side="right")


def _split_groups(groups: pd.Series, bounds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Whole groups to splits: groups in a random order fill the splits by row count; a row
    without a group is a group of its own."""
    import pandas as pd

    codes, uniques = pd.factorize(groups, sort=True)
    missing = codes < 0
    codes = codes.copy()
    codes[missing] = len(uniques) + np.arange(int(missing.sum()))
    n_groups = int(codes.max()) + 1
    sizes = np.bincount(codes, minlength=n_groups)
    order = rng.permutation(n_groups)
    ends = np.cumsum(sizes[order])
    middles = (ends - sizes[order] / 2) / len(codes)
    split_of_group = np.empty(n_groups, dtype=np.int64)
    split_of_group[order] = np.minimum(np.searchsorted(bounds, middles, side="right"), 2)
    return split_of_group[codes]


def _normalised(values: Sequence[Any]) -> list[Any]:
    """Labels as comparable values: integral numbers as ints (CSV readers make floats of ints
    in columns with gaps), other numbers as they are, anything else as strings."""
    if all(isinstance(v, numbers.Real) for v in values):
        if all(
            isinstance(v, numbers.Integral) or (math.isfinite(v) and float(v).is_integer())
            for v in values
        ):
            return [int(v) for v in values]
        return [float(v) for v in values]
    return [str(v) for v in values]


def _labelled(
    frames: Mapping[str, pd.DataFrame], settings: DataSettings, source: str
) -> LabelledData:
    sizes = {s: len(f) for s, f in frames.items()}
    flat: list[Any] = []
    for frame in frames.values():
        flat.extend(frame[settings.label_column].tolist())
    values = _normalised(flat)
    distinct = sorted(set(values))
    if len(distinct) < 2:
        raise ConfigError(
            f"the label column {settings.label_column!r} of {source} has a single value "
            f"{describe(distinct[0] if distinct else None)}; classification needs at least two "
            "labels. Check `label_column` and the data.",
            path=("label_column",),
        )
    ids = {v: i for i, v in enumerate(distinct)}
    texts: dict[str, list[str]] = {}
    labels: dict[str, np.ndarray] = {}
    groups: dict[str, np.ndarray] | None = {} if settings.group_column else None
    start = 0
    for i, (split, frame) in enumerate(frames.items()):
        order = np.random.default_rng([settings.seed, i]).permutation(len(frame))
        split_values = values[start : start + sizes[split]]
        start += sizes[split]
        texts[split] = [str(t) for t in frame[settings.text_column].to_numpy()[order]]
        labels[split] = np.array([ids[split_values[j]] for j in order], dtype=np.int64)
        if groups is not None and settings.group_column is not None:
            groups[split] = frame[settings.group_column].to_numpy()[order]
    train_labels = set(labels["train"].tolist())
    if len(train_labels) < 2:
        raise ConfigError(
            f"the train split of {source} has a single label "
            f"{str(distinct[next(iter(train_labels))])!r}; classification needs at least two.",
            path=("label_column",),
        )
    label_names = tuple(str(v) for v in distinct)
    return LabelledData(texts, labels, label_names, groups, source)


@dataclass
class TokenCache:
    """Token ids of the first rows of each split, tokenised once per ``max_length``.

    Attributes:
        tokenizer: A ``transformers`` tokenizer.
        data: The data the rows come from.
    """

    tokenizer: Any
    data: LabelledData
    _ids: dict[tuple[str, int], list[list[int]]] = field(default_factory=dict, repr=False)

    def ids(self, split: str, n: int, max_length: int) -> list[list[int]]:
        """Token ids of the first ``n`` rows of ``split``, truncated to ``max_length``."""
        done = self._ids.setdefault((split, max_length), [])
        texts = self.data.texts[split]
        while len(done) < min(n, len(texts)):
            chunk = texts[len(done) : min(n, len(done) + _TOKENIZE_CHUNK)]
            encoded = self.tokenizer(chunk, truncation=True, max_length=max_length)
            done.extend(list(ids) for ids in encoded["input_ids"])
        return done[:n]
