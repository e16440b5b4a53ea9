"""Where finetune data comes from: local files (found under the working directory or
``$PARETUNE_DATA_DIR``, format told by the name) and Hugging Face hub datasets."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from paretune._errors import ConfigError
from paretune.objectives._paths import DATA_DIR_ENV, resolve_file

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DATA_DIR_ENV",
    "check_sources",
    "file_format",
    "is_local",
    "read_hub",
    "read_table",
    "resolve_file",
]

_log = logging.getLogger(__name__)

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


def file_format(path: str | Path) -> str | None:
    """``"csv"``, ``"tsv"``, ``"jsonl"``, ``"json"`` or ``"parquet"`` from the file name
    (a compression suffix such as ``.gz`` is looked through), ``None`` for other names."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes = suffixes[:-1]
    return _FORMATS.get(suffixes[-1]) if suffixes else None


def is_local(data: str) -> bool:
    """Whether ``data`` names a local file (by its format suffix, or because it exists)."""
    if file_format(data) is not None:
        return True
    try:
        resolve_file(data, "data")
    except ConfigError:
        return False
    return True


def check_sources(data: str | None, files: Mapping[str, str]) -> None:
    """Fail early, when the objective is built, rather than in the first trial: every split
    file in ``files`` exists, and ``data`` is an existing file or else a hub dataset, which
    needs the ``datasets`` library.

    Raises:
        ConfigError: A file does not exist (the message names the places tried) or
            ``datasets`` is missing; the path names the setting.
    """
    for split, value in files.items():
        resolve_file(value, split)
    if data is None:
        return
    if file_format(data) is not None:
        resolve_file(data, "data")
    elif not is_local(data) and importlib.util.find_spec("datasets") is None:
        raise _needs_datasets(data)


def _needs_datasets(data: str) -> ConfigError:
    return ConfigError(
        f"{data!r} is not a local file (csv, tsv, jsonl, json or parquet, found under the "
        f"working directory or ${DATA_DIR_ENV}), so it is read as a Hugging Face hub dataset, "
        "which needs the `datasets` library: pip install datasets.",
        path=("data",),
    )


def read_table(path: Path, setting: str) -> pd.DataFrame:
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


def read_hub(data: str, dataset_config: str | None, label_column: str) -> dict[str, pd.DataFrame]:
    """The splits of the hub dataset ``data`` (subset ``dataset_config``) as frames, class
    ids of ``label_column`` turned into their names; an unlabelled test split is left out.

    Raises:
        ConfigError: ``datasets`` is not installed, or the dataset cannot be loaded.
    """
    try:
        import datasets
    except ImportError:
        raise _needs_datasets(data) from None
    try:
        loaded = datasets.load_dataset(data, dataset_config)
    except Exception as err:  # datasets raises many kinds (network, missing configs, ...)
        raise ConfigError(
            f"cannot load the hub dataset {data!r} (config "
            f"{dataset_config!r}): {type(err).__name__}: {err}",
            path=("data",),
        ) from None
    if not isinstance(loaded, Mapping):  # a single Dataset
        loaded = {"train": loaded}
    frames: dict[str, pd.DataFrame] = {}
    for split, dataset in loaded.items():
        frame = dataset.to_pandas()
        feature = getattr(dataset, "features", {}).get(label_column)
        class_names = getattr(feature, "names", None)
        if class_names and label_column in frame:
            # A ClassLabel: ids become names, -1 (datasets' "no label") becomes missing.
            names = {i: str(n) for i, n in enumerate(class_names)}
            frame[label_column] = frame[label_column].map(names)
        frames[str(split)] = frame
    # An unlabelled test split (GLUE's) is no test split.
    test = frames.get("test")
    if test is not None and label_column in test and test[label_column].isna().all():
        _log.warning("the test split of %r has no labels; it is left out", data)
        del frames["test"]
    return frames
