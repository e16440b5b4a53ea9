"""Text classification data for the finetune objective: read, check, split, label, tokenise.

Everything here works on plain pandas frames and lists; torch and transformers are not
imported. The objective (:mod:`paretune.objectives.finetune`) builds a :class:`DataSettings`
from its settings, calls :func:`load_data` once per process and keeps the result.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from paretune._errors import ConfigError, describe

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT_FRACTIONS",
    "SPLITS",
    "DataSettings",
    "LabelledData",
    "TokenCache",
    "file_format",
    "load_data",
    "resolve_file",
]

_log = logging.getLogger("paretune.objectives.finetune")

SPLITS = ("train", "validation", "test")
DATA_DIR_ENV = "PARETUNE_DATA_DIR"
"""Relative data paths that are not found under the working directory are looked up here."""
DEFAULT_FRACTIONS: Mapping[str, float] = {"train": 0.8, "validation": 0.1, "test": 0.1}
_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")
_FRACTION_TOLERANCE = 1e-6
_TOKENIZE_CHUNK = 2048


def file_format(path: str | Path) -> str | None:
    """``"csv"``, ``"tsv"``, ``"jsonl"``, ``"json"`` or ``"parquet"`` from the file name
    (a compression suffix such as ``.gz`` is looked through), ``None`` for other names."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes = suffixes[:-1]
    return _FORMATS.get(suffixes[-1]) if suffixes else None


def resolve_file(value: str, setting: str) -> Path:
    """The data file ``value`` names: absolute, or relative to the working directory, or
    relative to ``$PARETUNE_DATA_DIR``, tried in that order.

    Raises:
        ConfigError: No such file; the message names every place tried (path ``setting``).
    """
    path = Path(value).expanduser()
    if path.is_absolute():
        if path.is_file():
            return path
        raise ConfigError(f"the data file {str(path)!r} does not exist.", path=(setting,))
    tried = [Path.cwd() / path]
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        tried.append(Path(data_dir).expanduser() / path)
    for candidate in tried:
        if candidate.is_file():
            return candidate.resolve()
    places = f"{str(tried[0])!r} (relative to the working directory)"
    if data_dir:
        places += f" and {str(tried[1])!r} (relative to ${DATA_DIR_ENV})"
    else:
        places += f"; ${DATA_DIR_ENV} is not set, so no data directory was tried"
    raise ConfigError(f"cannot find the data file {value!r}: tried {places}.", path=(setting,))


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
        if _is_local(settings.data):
            path = resolve_file(settings.data, "data")
            frame = _read_table(path, "data")
            frames = _split(_checked(frame, settings, str(path), "data"), settings)
            source = str(path)
        else:
            hub_frames = _read_hub(settings)
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
            frames[split] = _checked(_read_table(path, split), settings, str(path), split)
        source = ", ".join(f"{s}={settings.files[s]}" for s in frames)
    return _labelled(frames, settings, source)


def _is_local(data: str) -> bool:
    """Whether ``data`` names a local file (by its format suffix, or because it exists)."""
    if file_format(data) is not None:
        return True
    try:
        resolve_file(data, "data")
    except ConfigError:
        return False
    return True


def _read_table(path: Path, setting: str) -> pd.DataFrame:
    import pandas as pd

    fmt = file_format(path)
    if fmt is None:
        raise ConfigError(
            f"cannot tell the format of {str(path)!r} from its name; use a file ending in "
            f"{sorted(_FORMATS)} (optionally compressed: {list(_COMPRESSIONS)}).",
            path=(setting,),
        )
    try:
        if fmt == "csv":
            return pd.read_csv(path)
        if fmt == "tsv":
            return pd.read_csv(path, sep="\t")
        if fmt == "jsonl":
            return pd.read_json(path, lines=True)
        if fmt == "json":
            try:
                return pd.read_json(path)
            except ValueError:  # a .json file of JSON lines
                return pd.read_json(path, lines=True)
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"the data file {str(path)!r} is empty.", path=(setting,)) from None
    except ImportError as err:
        raise ConfigError(
            f"reading {str(path)!r} ({fmt}) needs a library that is not installed: {err}. "
            + ("pip install pyarrow" if fmt == "parquet" else ""),
            path=(setting,),
        ) from None
    except (ValueError, OSError) as err:
        raise ConfigError(f"cannot read {str(path)!r} as {fmt}: {err}", path=(setting,)) from None


def _read_hub(settings: DataSettings) -> dict[str, pd.DataFrame]:
    assert settings.data is not None  # checked by the caller
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            f"{settings.data!r} is not a local file (csv, tsv, jsonl, json or parquet, found "
            f"under the working directory or ${DATA_DIR_ENV}), so it is read as a Hugging Face "
            "hub dataset, which needs the `datasets` library: pip install datasets.",
            path=("data",),
        ) from None
    try:
        loaded = datasets.load_dataset(settings.data, settings.dataset_config)
    except Exception as err:  # datasets raises many kinds (network, missing configs, ...)
        raise ConfigError(
            f"cannot load the hub dataset {settings.data!r} (config "
            f"{settings.dataset_config!r}): {type(err).__name__}: {err}",
            path=("data",),
        ) from None
    if not isinstance(loaded, Mapping):  # a single Dataset
        loaded = {"train": loaded}
    frames: dict[str, pd.DataFrame] = {}
    for split, dataset in loaded.items():
        frame = dataset.to_pandas()
        feature = getattr(dataset, "features", {}).get(settings.label_column)
        class_names = getattr(feature, "names", None)
        if class_names and settings.label_column in frame:
            # A ClassLabel: ids become names, -1 (datasets' "no label") becomes missing.
            names = {i: str(n) for i, n in enumerate(class_names)}
            frame[settings.label_column] = frame[settings.label_column].map(names)
        frames[str(split)] = frame
    # An unlabelled test split (GLUE's) is no test split.
    test = frames.get("test")
    if (
        test is not None
        and settings.label_column in test
        and test[settings.label_column].isna().all()
    ):
        _log.warning("the test split of %r has no labels; it is left out", settings.data)
        del frames["test"]
    return frames


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
