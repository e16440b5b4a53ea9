"""A learning-rate schedule as spec settings: :class:`WSDSchedule`, :class:`PowerSchedule`,
:class:`CosineSchedule` and :class:`ConstantSchedule`, told apart by ``type``
(:data:`Schedule`), each building its scheduler of :mod:`paretune.spaces.schedules` for a run
of known length.

Torch is imported by ``build`` only, so that settings models (an objective's) can hold a
schedule without importing torch. The models are public through
:mod:`paretune.spaces.schedules`.
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import (
    ConfigDict,
    Field,
    NonNegativeInt,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)

from paretune._errors import ConfigError, describe
from paretune._validation import FieldError, StrictModel, config_error

if TYPE_CHECKING:
    import torch

    from paretune.spaces.schedules import FactorScheduler, PowerScheduler, WSDScheduler

__all__ = [
    "ConstantSchedule",
    "CosineSchedule",
    "PowerSchedule",
    "Schedule",
    "Shape",
    "WSDSchedule",
    "schedule_from_dict",
]

Shape = Literal["linear", "cosine", "1-sqrt"]
# A fraction of the run's steps: 0 <= value < 1.
OpenFraction = Annotated[float, Field(ge=0, lt=1)]


class _Schedule(StrictModel, abc.ABC):
    """Strict types (``2.0`` is no number of steps, ``"0.1"`` no fraction), finite numbers, an
    unknown key's error located at the key, and a warmup given as a fraction of the run's steps
    or as steps."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False)
    locate_unknown_keys: ClassVar[bool] = True

    # Declared here so that it comes first among the allowed keys; each schedule narrows it.
    type: str
    warmup_fraction: OpenFraction = 0.05
    warmup_steps: NonNegativeInt | None = None

    @model_validator(mode="after")
    def _one_warmup_length(self) -> _Schedule:
        _one_of(self, "warmup", self.warmup_steps)
        return self

    @abc.abstractmethod
    def build(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        total_steps: int,
        batch_size: int,
        tokens_per_step: int,
    ) -> FactorScheduler:
        """The scheduler of ``optimizer`` for a run of ``total_steps`` optimiser steps of
        ``batch_size`` sequences and ``tokens_per_step`` tokens (the last two are used by
        :class:`PowerSchedule` only).

        Raises:
            ConfigError: ``total_steps`` is not a positive integer, or the warmup and decay
                (in steps) do not fit in it (path: the length at fault).
        """

    def _warmup_length(self, total_steps: int) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return _steps_of(self.warmup_fraction, total_steps, up=True)


class _Decaying(_Schedule):
    """A schedule that ends with a decay, given as a fraction of the run's steps or as steps."""

    decay_fraction: OpenFraction = 0.1
    decay_steps: NonNegativeInt | None = None

    @model_validator(mode="after")
    def _one_decay_length(self) -> _Decaying:
        _one_of(self, "decay", self.decay_steps)
        if self.warmup_steps is None and self.decay_steps is None:
            total = self.warmup_fraction + self.decay_fraction
            if total > 1.0:
                raise FieldError(
                    f"warmup_fraction + decay_fraction must be <= 1, but got "
                    f"{self.warmup_fraction:g} + {self.decay_fraction:g} = {total:g}; "
                    "shorten the decay or the warmup",
                    path=("decay_fraction",),
                )
        return self

    def _lengths(self, total_steps: int) -> tuple[int, int]:
        """The warmup's and the decay's steps in a run of ``total_steps``, which they fit."""
        total = _total(total_steps)
        warmup = self._warmup_length(total)
        if self.decay_steps is not None:
            decay = self.decay_steps
        else:
            decay = _steps_of(self.decay_fraction, total, up=False)
        _fits(warmup, total, "warmup_steps")
        if warmup + decay > total:
            field = "decay_steps" if self.decay_steps is not None else "decay_fraction"
            raise ConfigError(
                f"the warmup and the decay must fit in the run's {total} steps, but take "
                f"{warmup} + {decay} steps; shorten the decay or the warmup",
                path=(field,),
            )
        return warmup, decay


class WSDSchedule(_Decaying):
    """Warmup, stable, decay (:class:`~paretune.spaces.schedules.WSDScheduler`): the factor
    rises to 1, stays there, and falls to ``min_lr_ratio`` over the last steps.

    Attributes:
        type: ``"wsd"``.
        warmup_fraction: The warmup's share of the steps, in ``[0, 1)``, rounded up to steps.
        warmup_steps: The warmup in steps, instead of ``warmup_fraction``.
        decay_fraction: The decay's share of the steps, in ``[0, 1)``, rounded down to steps.
        decay_steps: The decay in steps, instead of ``decay_fraction``.
        decay_shape: ``"linear"``, ``"cosine"`` or ``"1-sqrt"``.
        warmup_shape: The warmup's shape, from the same three.
        min_lr_ratio: The factor at the start of the warmup and after the decay, in ``[0, 1]``.
    """

    type: Literal["wsd"] = "wsd"
    decay_shape: Shape = "linear"
    warmup_shape: Shape = "linear"
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)

    def build(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        total_steps: int,
        batch_size: int,
        tokens_per_step: int,
    ) -> WSDScheduler:
        from paretune.spaces.schedules import WSDScheduler

        warmup, decay = self._lengths(total_steps)
        return WSDScheduler(
            optimizer,
            warmup_steps=warmup,
            stable_steps=total_steps - warmup - decay,
            decay_steps=decay,
            decay=self.decay_shape,
            warmup=self.warmup_shape,
            min_lr_ratio=self.min_lr_ratio,
        )


class PowerSchedule(_Decaying):
    """The Power scheduler of Shen et al. 2024
    (:class:`~paretune.spaces.schedules.PowerScheduler`): the factor is the learning rate
    ``min(lr_max, batch_size * a * n ** b)`` of the ``n`` tokens seen, after a linear warmup
    and before an optional exponential decay to 0. Give the optimizer's groups ``lr=1.0`` (or
    muP's multipliers).

    Attributes:
        type: ``"power"``.
        a: The amplitude, > 0 (the paper's 4.0).
        b: The exponent of the tokens seen, < 0 (the paper's -0.51).
        lr_max: The upper bound of the learning rate, > 0 (the paper's 0.02).
        warmup_fraction: The warmup's share of the steps, in ``[0, 1)``, rounded up to steps.
        warmup_steps: The warmup in steps, instead of ``warmup_fraction``.
        decay_fraction: The decay's share of the steps, in ``[0, 1)``, rounded down to steps;
            0 (the default) for none.
        decay_steps: The decay in steps, instead of ``decay_fraction``.
    """

    type: Literal["power"] = "power"
    a: float = Field(default=4.0, gt=0)
    b: float = Field(default=-0.51, lt=0)
    lr_max: float = Field(default=0.02, gt=0)
    decay_fraction: OpenFraction = 0.0

    def build(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        total_steps: int,
        batch_size: int,
        tokens_per_step: int,
    ) -> PowerScheduler:
        from paretune.spaces.schedules import PowerScheduler

        warmup, decay = self._lengths(total_steps)
        return PowerScheduler(
            optimizer,
            batch_size=batch_size,
            tokens_per_step=tokens_per_step,
            a=self.a,
            b=self.b,
            lr_max=self.lr_max,
            warmup_steps=warmup,
            decay_steps=decay,
            total_steps=total_steps,
        )


class CosineSchedule(_Schedule):
    """A linear warmup to a factor of 1, then half a cosine down to ``min_lr_ratio`` over all
    the remaining steps (Loshchilov and Hutter's SGDR without restarts, the usual pretraining
    schedule): a :class:`~paretune.spaces.schedules.WSDScheduler` with no stable phase and a
    cosine decay, so it has no ``decay_fraction`` of its own.

    Attributes:
        type: ``"cosine"``.
        warmup_fraction: The warmup's share of the steps, in ``[0, 1)``, rounded up to steps.
        warmup_steps: The warmup in steps, instead of ``warmup_fraction``.
        min_lr_ratio: The factor at the start of the warmup and at the end, in ``[0, 1]``.
    """

    type: Literal["cosine"] = "cosine"
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)

    def build(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        total_steps: int,
        batch_size: int,
        tokens_per_step: int,
    ) -> WSDScheduler:
        from paretune.spaces.schedules import WSDScheduler

        total = _total(total_steps)
        warmup = self._warmup_length(total)
        _fits(warmup, total, "warmup_steps")
        return WSDScheduler(
            optimizer,
            warmup_steps=warmup,
            stable_steps=0,
            decay_steps=total - warmup,
            decay="cosine",
            min_lr_ratio=self.min_lr_ratio,
        )


class ConstantSchedule(_Schedule):
    """A linear warmup from 0 to a factor of 1, which then stays (a
    :class:`~paretune.spaces.schedules.WSDScheduler` without a decay, so the factor is 0 past
    the run's ``total_steps``).

    Attributes:
        type: ``"constant"``.
        warmup_fraction: The warmup's share of the steps, in ``[0, 1)``, rounded up to steps.
        warmup_steps: The warmup in steps, instead of ``warmup_fraction``.
    """

    type: Literal["constant"] = "constant"

    def build(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        total_steps: int,
        batch_size: int,
        tokens_per_step: int,
    ) -> WSDScheduler:
        from paretune.spaces.schedules import WSDScheduler

        total = _total(total_steps)
        warmup = self._warmup_length(total)
        _fits(warmup, total, "warmup_steps")
        return WSDScheduler(
            optimizer, warmup_steps=warmup, stable_steps=total - warmup, decay_steps=0
        )


def _at_its_keys(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A mapping through :func:`schedule_from_dict`, whose errors name the key below the
    schedule (``schedule.a``), where pydantic's would put the type in between
    (``schedule.power.a``)."""
    if not isinstance(value, Mapping):
        return handler(value)
    try:
        return schedule_from_dict(value)
    except ConfigError as err:
        raise FieldError(err.message, path=err.path) from None


#: A schedule's settings, told apart by ``type``: a field type for settings models (JSON schema
#: included), whose errors are located as :func:`schedule_from_dict`'s, below the field.
Schedule = Annotated[
    WSDSchedule | PowerSchedule | CosineSchedule | ConstantSchedule,
    Field(discriminator="type"),
    WrapValidator(_at_its_keys),
]

_TYPES: dict[
    str, type[WSDSchedule] | type[PowerSchedule] | type[CosineSchedule] | type[ConstantSchedule]
] = {
    "wsd": WSDSchedule,
    "power": PowerSchedule,
    "cosine": CosineSchedule,
    "constant": ConstantSchedule,
}


def schedule_from_dict(value: Mapping[str, Any]) -> Schedule:
    """The schedule a spec's mapping describes (``{"type": "power", "a": 4.0, ...}``).

    Raises:
        ConfigError: ``value`` is no mapping, its ``type`` is missing or unknown, a key is
            unknown, or a value is wrong (path: the key at fault, below the schedule).
    """
    kinds = ", ".join(_TYPES)
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"a schedule must be a mapping with a `type` ({kinds}), but got {describe(value)}"
        )
    if "type" not in value:
        raise ConfigError(f"required field is missing (one of {kinds})", path=("type",))
    kind = value["type"]
    if not isinstance(kind, str) or kind not in _TYPES:
        raise ConfigError(f"must be one of {kinds}, but got {describe(kind)}", path=("type",))
    try:
        return _TYPES[kind].model_validate(value)
    except ValidationError as err:
        raise config_error(err) from None


def _one_of(schedule: _Schedule, phase: str, steps: int | None) -> None:
    """A phase's length is a fraction or steps, not both."""
    if steps is not None and f"{phase}_fraction" in schedule.model_fields_set:
        raise FieldError(
            f"give either {phase}_fraction (of the run's steps) or {phase}_steps, not both; "
            f"got {phase}_steps={steps}",
            path=(f"{phase}_steps",),
        )


def _steps_of(fraction: float, total_steps: int, *, up: bool) -> int:
    """``fraction`` of ``total_steps`` in whole steps: up for a warmup (as the finetune objective
    and transformers' Trainer do), down for a decay, so that fractions summing to at most 1
    fit."""
    # Rounded first, so that 0.07 of 100 steps (7.000000000000001) is 7 steps, not 8.
    exact = round(fraction * total_steps, 9)
    return math.ceil(exact) if up else math.floor(exact)


def _total(value: Any) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ConfigError(
            f"must be an integer >= 1, but got {describe(value)}", path=("total_steps",)
        )
    return int(value)


def _fits(warmup: int, total_steps: int, field: str) -> None:
    if warmup > total_steps:
        raise ConfigError(
            f"the warmup must fit in the run's {total_steps} steps, but takes {warmup}; shorten it",
            path=(field,),
        )
