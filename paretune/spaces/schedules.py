"""Learning-rate schedules that keep each parameter group's multiplier.

A schedule here is a factor of the step, and every parameter group's learning rate is its own
initial learning rate times that factor, as with ``torch.optim.lr_scheduler.LambdaLR``. A group
created with ``lr=1.0`` follows the schedule exactly, and per-group multipliers (muP's hidden
matrices at ``lr / width_mult``) survive every step. The schedulers are plain
``torch.optim.lr_scheduler.LRScheduler`` subclasses: they save and load with
``state_dict``/``load_state_dict`` and step after ``optimizer.step()``.

``import paretune.spaces.schedules`` imports torch.
"""

from __future__ import annotations

import abc
import math
import numbers
from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import LRScheduler

from paretune._errors import ConfigError, describe

__all__ = ["FactorScheduler", "WSDScheduler"]

Shape = Literal["linear", "cosine", "1-sqrt"]
_SHAPES = ("linear", "cosine", "1-sqrt")


class FactorScheduler(LRScheduler, abc.ABC):
    """A schedule as a factor of the step: each group's LR is its initial LR times
    :meth:`factor` of the number of ``step()`` calls so far."""

    @abc.abstractmethod
    def factor(self, step: int) -> float:
        """The multiplier of every group's initial learning rate after ``step`` steps."""

    def get_lr(self) -> list[float]:  # type: ignore[override]
        value = self.factor(self.last_epoch)
        return [float(base) * value for base in self.base_lrs]


class WSDScheduler(FactorScheduler):
    """Warmup, stable, decay: the factor rises from ``min_lr_ratio`` to 1 over
    ``warmup_steps``, stays at 1 for ``stable_steps``, falls to ``min_lr_ratio`` over
    ``decay_steps`` along ``decay``, then stays there.

    The same factor as ``transformers.get_wsd_schedule(optimizer, warmup_steps, decay_steps,
    num_stable_steps=stable_steps, warmup_type=warmup, decay_type=decay,
    min_lr_ratio=min_lr_ratio)`` at every step (tested), usable without ``transformers``.

    Args:
        optimizer: The optimizer; each group's ``lr`` is its peak learning rate.
        warmup_steps: Steps of the warmup.
        stable_steps: Steps at the peak.
        decay_steps: Steps of the decay.
        decay: ``"linear"``, ``"cosine"`` (half a cosine) or ``"1-sqrt"``.
        warmup: The warmup's shape, from the same three.
        min_lr_ratio: The factor at the start of the warmup and after the decay (0 to 1).
        last_epoch: Steps already taken, when resuming without a ``state_dict`` (``-1``: none).

    Raises:
        ConfigError: A negative number of steps, an unknown shape, a ratio outside [0, 1].
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        warmup_steps: int,
        stable_steps: int,
        decay_steps: int,
        decay: Shape = "linear",
        warmup: Shape = "linear",
        min_lr_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        self.warmup_steps = _steps(warmup_steps, "warmup_steps")
        self.stable_steps = _steps(stable_steps, "stable_steps")
        self.decay_steps = _steps(decay_steps, "decay_steps")
        self.decay = _shape(decay, "decay")
        self.warmup = _shape(warmup, "warmup")
        if not (_is_number(min_lr_ratio) and 0.0 <= min_lr_ratio <= 1.0):
            raise ConfigError(
                f"must be a number in [0, 1], but got {describe(min_lr_ratio)}",
                path=("min_lr_ratio",),
            )
        self.min_lr_ratio = float(min_lr_ratio)
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        low = self.min_lr_ratio
        if step < self.warmup_steps:
            rise = _rise(self.warmup, step / max(1, self.warmup_steps))
            return max(0.0, low + (1.0 - low) * rise)
        step -= self.warmup_steps
        if step < self.stable_steps:
            return 1.0
        step -= self.stable_steps
        if step < self.decay_steps:
            fall = _fall(self.decay, step / max(1, self.decay_steps))
            return max(0.0, low + (1.0 - low) * fall)
        return low


def _rise(shape: str, progress: float) -> float:
    """From 0 (progress 0) to 1 (progress 1) along ``shape``."""
    if shape == "linear":
        return progress
    if shape == "cosine":
        return 0.5 * (1.0 - math.cos(math.pi * progress))
    return 1.0 - math.sqrt(1.0 - progress)  # "1-sqrt"


def _fall(shape: str, progress: float) -> float:
    """From 1 (progress 0) to 0 (progress 1) along ``shape``."""
    if shape == "linear":
        return 1.0 - progress
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - math.sqrt(progress)  # "1-sqrt"


def _steps(value: Any, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"must be an integer >= 0, but got {describe(value)}", path=(name,))
    return int(value)


def _shape(value: Any, name: str) -> str:
    if value not in _SHAPES:
        raise ConfigError(
            f"must be one of {', '.join(_SHAPES)}, but got {describe(value)}", path=(name,)
        )
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
