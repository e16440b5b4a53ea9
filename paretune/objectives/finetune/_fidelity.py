"""How much a finetune trial trains and evaluates: the :class:`Fidelity` of the search, of
full-fidelity evaluations, and of a trial with a budget."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from paretune._errors import ConfigError, describe
from paretune.objectives.finetune._settings import positive_float, positive_int

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "Fidelity",
    "checked_budget",
    "scaled",
    "schedules",
    "with_lengths",
]

DEFAULT_MAX_LENGTH = 128


@dataclass(frozen=True)
class Fidelity:
    """How much one trial trains and evaluates.

    Attributes:
        train_examples: Training rows used (the first of the split's seeded order); ``None``
            for all.
        epochs: Passes over those rows; fractions are allowed (at least one step is taken).
        max_length: Tokens per text after truncation; ``None`` (the default) is 128, or the
            model's number of positions if that is smaller.
        eval_examples: Validation (and test) rows evaluated; ``None`` for all.
        evals_per_epoch: Validation evaluations per epoch (and one after the last step).
    """

    train_examples: int | None = None
    epochs: float = 1.0
    max_length: int | None = None
    eval_examples: int | None = None
    evals_per_epoch: int = 1


_FIELDS = tuple(f.name for f in dataclasses.fields(Fidelity))


def schedules(fidelity: Any, full_fidelity: Any) -> tuple[Fidelity, Fidelity]:
    """The search's and the full-fidelity schedules from the settings of the same names.

    Full fidelity is the search's with every training, validation and test row, overridden
    key by key by ``full_fidelity``.

    Raises:
        ConfigError: A value is invalid or a key unknown (path ``fidelity.<key>`` or
            ``full_fidelity.<key>``).
    """
    search = _parsed(fidelity, "fidelity", Fidelity())
    full_base = dataclasses.replace(search, train_examples=None, eval_examples=None)
    return search, _parsed(full_fidelity, "full_fidelity", full_base)


def with_lengths(
    search: Fidelity, full: Fidelity, positions: int | None
) -> tuple[Fidelity, Fidelity]:
    """Both schedules with ``max_length`` resolved for a model of ``positions`` positions
    (``None``: unknown): the default is 128 or ``positions`` if that is smaller.

    Raises:
        ConfigError: A ``max_length`` exceeds ``positions``.
    """
    for name, schedule in (("fidelity", search), ("full_fidelity", full)):
        length = schedule.max_length
        if positions is not None and length is not None and length > positions:
            raise ConfigError(
                f"`max_length` must be at most the model's {positions} positions, but got "
                f"max_length={length}.",
                path=(name, "max_length"),
            )
    default = min(DEFAULT_MAX_LENGTH, positions or DEFAULT_MAX_LENGTH)
    search, full = (
        s if s.max_length is not None else dataclasses.replace(s, max_length=default)
        for s in (search, full)
    )
    return search, full


def checked_budget(budget: Any) -> float:
    """``budget`` as a float in ``(0, 1]``.

    Raises:
        ConfigError: It is not a number in ``(0, 1]``.
    """
    if (
        isinstance(budget, bool)
        or not isinstance(budget, numbers.Real)
        or not 0 < float(budget) <= 1
    ):
        raise ConfigError(
            "the finetune objective takes a budget in (0, 1] (1.0: full fidelity; less: that "
            f"fraction of the training examples), but got budget={describe(budget)}."
        )
    return float(budget)


def scaled(schedule: Fidelity, budget: float, available: int) -> Fidelity:
    """``schedule`` training on ``budget`` of its training rows (at least one), of which the
    training split has ``available``; its other values are kept."""
    base = available if schedule.train_examples is None else min(schedule.train_examples, available)
    return dataclasses.replace(schedule, train_examples=max(1, round(base * budget)))


def _parsed(value: Any, setting: str, base: Fidelity) -> Fidelity:
    if value is None:
        return base
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"`{setting}` must be a mapping with keys from {list(_FIELDS)}, but got "
            f"{describe(value)}.",
            path=(setting,),
        )
    changes: dict[str, Any] = {}
    for key, v in value.items():
        path = (setting, key)
        if key in ("train_examples", "eval_examples"):
            changes[key] = None if v is None else positive_int(v, key, path=path)
        elif key == "epochs":
            changes[key] = positive_float(v, key, path=path)
        elif key in ("max_length", "evals_per_epoch"):
            changes[key] = positive_int(v, key, path=path)
        else:
            raise ConfigError(
                f"unknown fidelity key {key!r}; the keys are {list(_FIELDS)}.",
                path=path,
            )
    return dataclasses.replace(base, **changes)
