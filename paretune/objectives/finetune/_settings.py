"""The finetune objective's settings, checked: data sources, training settings, numbers.

Every check raises :class:`~paretune.ConfigError` with the setting's path (``learning_rate``,
``split_fractions.test``), which :func:`~paretune.objectives.build_objective` places under
``objective.settings``.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from paretune._errors import ConfigError, describe
from paretune.objectives.finetune._data import DEFAULT_FRACTIONS, SPLITS, DataSettings
from paretune.objectives.finetune._files import file_format, resolve_file
from paretune.objectives.finetune._precision import PRECISIONS, resolve_precision
from paretune.objectives.finetune._train import Hyper

__all__ = [
    "TrainingSettings",
    "boolean",
    "data_settings",
    "integer",
    "non_empty_str",
    "non_negative_float",
    "positive_float",
    "positive_int",
    "training_settings",
    "unit_float",
]


@dataclass(frozen=True)
class TrainingSettings:
    """How every trial trains, checked (see ``Finetune`` for each setting)."""

    learning_rate: float
    learning_rate_multipliers: Mapping[str, float]
    full_learning_rate: float
    batch_size: int
    eval_batch_size: int
    weight_decay: float
    warmup_ratio: float
    max_grad_norm: float
    lora_dropout: float
    group_by_length: bool
    precision: str
    device: str | None

    def for_trial(
        self, params: Mapping[str, Any], *, full: bool, device: str
    ) -> tuple[Hyper, float]:
        """A trial's optimiser settings and LoRA dropout: searched parameters of the same name
        win over the settings; full fine-tuning trains at ``full_learning_rate``, unscaled.

        Raises:
            ConfigError: A searched value is out of its range (path: the parameter's name).
        """
        values: dict[str, Any] = {
            "learning_rate": self.full_learning_rate if full else self.learning_rate,
            "batch_size": self.batch_size,
            "weight_decay": self.weight_decay,
            "warmup_ratio": self.warmup_ratio,
            "lora_dropout": self.lora_dropout,
        }
        for name, check in _SEARCHABLE.items():
            if name in params:
                values[name] = check(params[name], name)
        lora_dropout = values.pop("lora_dropout")
        hyper = Hyper(
            eval_batch_size=self.eval_batch_size,
            max_grad_norm=self.max_grad_norm,
            group_by_length=self.group_by_length,
            precision=resolve_precision(self.precision, device),
            lr_multipliers={} if full else dict(self.learning_rate_multipliers),
            **values,
        )
        return hyper, lora_dropout


def training_settings(
    *,
    learning_rate: Any,
    learning_rate_multipliers: Any,
    full_learning_rate: Any,
    batch_size: Any,
    eval_batch_size: Any,
    weight_decay: Any,
    warmup_ratio: Any,
    max_grad_norm: Any,
    lora_dropout: Any,
    group_by_length: Any,
    precision: Any,
    device: Any,
) -> TrainingSettings:
    """The training settings, checked."""
    return TrainingSettings(
        learning_rate=positive_float(learning_rate, "learning_rate"),
        learning_rate_multipliers=multipliers(learning_rate_multipliers),
        full_learning_rate=positive_float(full_learning_rate, "full_learning_rate"),
        batch_size=positive_int(batch_size, "batch_size"),
        eval_batch_size=positive_int(eval_batch_size, "eval_batch_size"),
        weight_decay=non_negative_float(weight_decay, "weight_decay"),
        warmup_ratio=unit_float(warmup_ratio, "warmup_ratio", high_open=True),
        max_grad_norm=positive_float(max_grad_norm, "max_grad_norm"),
        lora_dropout=unit_float(lora_dropout, "lora_dropout", high_open=True),
        group_by_length=boolean(group_by_length, "group_by_length"),
        precision=_precision(precision),
        device=None if device is None else non_empty_str(device, "device"),
    )


def data_settings(
    *,
    data: Any,
    dataset_config: Any,
    files: Mapping[str, Any],
    text_column: Any,
    label_column: Any,
    group_column: Any,
    split_fractions: Any,
    stratify: Any,
    data_seed: Any,
) -> DataSettings:
    """The data settings, checked: one source (``data``) or split files, which must exist
    now (a hub dataset needs the ``datasets`` library), columns, fractions and seed."""
    given = {split: value for split, value in files.items() if value is not None}
    for split, value in given.items():
        non_empty_str(value, split)
    if data is not None:
        non_empty_str(data, "data")
        if given:
            raise ConfigError(
                f"give either `data` (split by fractions) or split files ({sorted(given)}), "
                "not both.",
                path=("data",),
            )
    elif not given:
        raise ConfigError(
            "no data: set `data` (a local file or a hub dataset, split by `split_fractions`) "
            "or the split files `train` and `validation` (and optionally `test`).",
            path=("data",),
        )
    else:
        for needed in ("train", "validation"):
            if needed not in given:
                raise ConfigError(
                    f"with split files, `{needed}` is needed too (or give one `data` file to "
                    "split by `split_fractions`).",
                    path=(needed,),
                )
        for split, value in given.items():
            resolve_file(value, split)  # fails early with the places tried
    if data is not None and file_format(data) is not None:
        resolve_file(data, "data")
    elif data is not None:
        try:
            resolve_file(data, "data")
        except ConfigError:
            if importlib.util.find_spec("datasets") is None:
                raise ConfigError(
                    f"{data!r} is not a local file (csv, tsv, jsonl, json or parquet, under the "
                    "working directory or $PARETUNE_DATA_DIR), so it is read as a Hugging Face "
                    "hub dataset, which needs the `datasets` library: pip install datasets.",
                    path=("data",),
                ) from None
    if dataset_config is not None:
        non_empty_str(dataset_config, "dataset_config")
    non_empty_str(text_column, "text_column")
    non_empty_str(label_column, "label_column")
    if group_column is not None:
        non_empty_str(group_column, "group_column")
    return DataSettings(
        data=data,
        dataset_config=dataset_config,
        files=given,
        text_column=text_column,
        label_column=label_column,
        group_column=group_column,
        fractions=fractions(split_fractions),
        stratify=boolean(stratify, "stratify"),
        seed=integer(data_seed, "data_seed"),
    )


def fractions(value: Any) -> dict[str, float]:
    if value is None:
        return dict(DEFAULT_FRACTIONS)
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"`split_fractions` must map train, validation and test to fractions, but got "
            f"{describe(value)}.",
            path=("split_fractions",),
        )
    unknown = [k for k in value if k not in SPLITS]
    if unknown:
        raise ConfigError(
            f"unknown split {unknown[0]!r}; the splits are {list(SPLITS)}.",
            path=("split_fractions", unknown[0]),
        )
    out = {}
    for split in SPLITS:
        fraction = value.get(split, 0.0)
        out[split] = unit_float(fraction, split, path=("split_fractions", split))
        if split != "test" and out[split] == 0:
            raise ConfigError(
                f"the {split} fraction must be above 0, but got {fraction!r}.",
                path=("split_fractions", split),
            )
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(
            f"split fractions must sum to 1, but {out} sum to {total:g}.",
            path=("split_fractions",),
        )
    return out


def multipliers(value: Any) -> dict[str, float]:
    from paretune.spaces.peft import MODULE_KINDS

    name = "learning_rate_multipliers"
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"`{name}` must map module kinds ({', '.join(MODULE_KINDS)}) to positive factors, "
            f"but got {describe(value)}.",
            path=(name,),
        )
    unknown = sorted(str(k) for k in value if k not in MODULE_KINDS)
    if unknown:
        raise ConfigError(
            f"`{name}` has unknown module kind(s) {unknown}; allowed: {', '.join(MODULE_KINDS)}.",
            path=(name, unknown[0]),
        )
    return {str(k): positive_float(v, str(k), path=(name, str(k))) for k, v in value.items()}


def _path(name: str, path: Sequence[str | int] | None) -> tuple[str | int, ...]:
    return tuple(path) if path is not None else (name,)


def positive_float(value: Any, name: str, *, path: Sequence[str | int] | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) > 0:
        raise ConfigError(
            f"`{name}` must be a positive number, but got {describe(value)}.",
            path=_path(name, path),
        )
    if not math.isfinite(float(value)):
        raise ConfigError(f"`{name}` must be finite, but got {value!r}.", path=_path(name, path))
    return float(value)


def non_negative_float(value: Any, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0 <= float(value) < math.inf
    ):
        raise ConfigError(
            f"`{name}` must be a number >= 0, but got {describe(value)}.", path=(name,)
        )
    return float(value)


def unit_float(
    value: Any, name: str, *, high_open: bool = False, path: Sequence[str | int] | None = None
) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        ok = 0 <= float(value) < 1 if high_open else 0 <= float(value) <= 1
    if not ok:
        bound = "0 <= {} < 1" if high_open else "0 <= {} <= 1"
        raise ConfigError(
            f"`{bound.format(name)}` must hold, but got {describe(value)}.",
            path=_path(name, path),
        )
    return float(value)


def positive_int(value: Any, name: str, *, path: Sequence[str | int] | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ConfigError(
            f"`{name}` must be a positive integer, but got {describe(value)}.",
            path=_path(name, path),
        )
    return int(value)


def integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"`{name}` must be an integer, but got {describe(value)}.", path=(name,))
    return int(value)


def boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(
            f"`{name}` must be true or false, but got {describe(value)}.", path=(name,)
        )
    return value


def non_empty_str(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"`{name}` must be a non-empty string, but got {describe(value)}.", path=(name,)
        )
    return value


def _precision(value: Any) -> str:
    if value not in PRECISIONS:
        raise ConfigError(
            f"`precision` must be one of {list(PRECISIONS)}, but got {describe(value)}.",
            path=("precision",),
        )
    return str(value)


def _open_unit_float(value: Any, name: str) -> float:
    return unit_float(value, name, high_open=True)


# The settings a space may search (``extra_space``), with their checks.
_SEARCHABLE = {
    "learning_rate": positive_float,
    "batch_size": positive_int,
    "weight_decay": non_negative_float,
    "warmup_ratio": _open_unit_float,
    "lora_dropout": _open_unit_float,
}
