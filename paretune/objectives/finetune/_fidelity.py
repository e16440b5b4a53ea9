"""How much a finetune trial trains and evaluates: the :class:`Fidelity` of the search, of
full-fidelity evaluations, and of a trial with a budget."""

from __future__ import annotations

from paretune._errors import ConfigError
from paretune.objectives.finetune._settings import Fidelity

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "scaled",
    "schedules",
    "with_lengths",
]

DEFAULT_MAX_LENGTH = 128


def schedules(
    fidelity: Fidelity | None, full_fidelity: Fidelity | None
) -> tuple[Fidelity, Fidelity]:
    """The search's and the full-fidelity schedules from the settings of the same names.

    Full fidelity is the search's with every training, validation and test row, overridden
    key by key by the keys ``full_fidelity`` was given.
    """
    search = Fidelity() if fidelity is None else fidelity
    full = search.model_copy(update={"train_examples": None, "eval_examples": None})
    if full_fidelity is not None:
        full = full.model_copy(update=full_fidelity.model_dump(exclude_unset=True))
    return search, full


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
        s if s.max_length is not None else s.model_copy(update={"max_length": default})
        for s in (search, full)
    )
    return search, full


def scaled(schedule: Fidelity, budget: float, available: int) -> Fidelity:
    """``schedule`` training on ``budget`` of its training rows (at least one), of which the
    training split has ``available``; its other values are kept."""
    base = available if schedule.train_examples is None else min(schedule.train_examples, available)
    return schedule.model_copy(update={"train_examples": max(1, round(base * budget))})
