"""Learning-rate schedules that keep each parameter group's multiplier.

A schedule here is a factor of the step, and every parameter group's learning rate is its own
initial learning rate times that factor, as with ``torch.optim.lr_scheduler.LambdaLR``. A group
created with ``lr=1.0`` follows the schedule exactly, and per-group multipliers (muP's hidden
matrices at ``lr / width_mult``) survive every step. The schedulers are plain
``torch.optim.lr_scheduler.LRScheduler`` subclasses: they save and load with
``state_dict``/``load_state_dict`` and step after ``optimizer.step()``.

A spec describes a schedule by its ``type`` and settings, which :func:`schedule_from_dict`
checks (or a settings model's field of type :data:`Schedule`), and whose ``build`` makes the
scheduler once the run's length is known. The lengths of the warmup and the decay are each a
fraction of the run's steps (``warmup_fraction``, rounded up; ``decay_fraction``, rounded down)
or steps (``warmup_steps``, ``decay_steps``), not both; the warmup is 5% of the steps unless
given::

    schedule: {type: power, a: 4.0, b: -0.51, lr_max: 0.02,
               warmup_fraction: 0.05, decay_fraction: 0.1}
    schedule: {type: wsd, warmup_steps: 100, decay_fraction: 0.2, decay_shape: 1-sqrt}
    schedule: {type: cosine, warmup_fraction: 0.1, min_lr_ratio: 0.1}
    schedule: {type: constant, warmup_fraction: 0.0}

>>> schedule = schedule_from_dict({"type": "power", "warmup_steps": 10})
>>> scheduler = schedule.build(  # doctest: +SKIP
...     optimizer, total_steps=1000, batch_size=16, tokens_per_step=16 * 4096
... )

``wsd`` (:class:`WSDSchedule`) decays by 10% of the steps unless given, ``power``
(:class:`PowerSchedule`) not at all, ``cosine`` (:class:`CosineSchedule`) over every step after
the warmup, and ``constant`` (:class:`ConstantSchedule`) has no decay.

``import paretune.spaces.schedules`` imports torch; the settings models alone
(``paretune.spaces._schedule_settings``) do not.
"""

from __future__ import annotations

import abc
import math
import numbers
from typing import Any, get_args

import torch
from torch.optim.lr_scheduler import LRScheduler

from paretune._errors import ConfigError, describe
from paretune.spaces._schedule_settings import (
    ConstantSchedule,
    CosineSchedule,
    PowerSchedule,
    Schedule,
    Shape,
    WSDSchedule,
    schedule_from_dict,
)

__all__ = [
    "ConstantSchedule",
    "CosineSchedule",
    "FactorScheduler",
    "PowerSchedule",
    "PowerScheduler",
    "Schedule",
    "WSDSchedule",
    "WSDScheduler",
    "schedule_from_dict",
]

_SHAPES: tuple[str, ...] = get_args(Shape)


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


class PowerScheduler(FactorScheduler):
    """The Power scheduler of Shen et al. (2024): linear warmup, then a learning rate that
    falls as a power of the tokens seen, then an optional exponential decay to 0.

    The factor after ``step`` steps, with ``n = step * tokens_per_step`` tokens seen and
    ``power(n) = min(lr_max, batch_size * a * n ** b)`` (the paper's equation 7):

    - warmup, ``step < warmup_steps``: ``step / warmup_steps * power(warmup_steps *
      tokens_per_step)``, a line from 0 to the value the power phase starts at;
    - power, up to ``total_steps - decay_steps`` (or forever without a decay): ``power(n)``;
    - decay, the last ``decay_steps`` steps: ``(exp(1 - p) - 1) / (e - 1) * power(start)``,
      where ``start`` is the tokens seen when the decay starts and ``p`` runs from 0 at
      ``total_steps - decay_steps`` to 1 at ``total_steps``; then 0.

    The factor is the learning rate itself (``lr_max`` is an absolute rate, 0.02 in the
    paper), so build the optimizer with ``lr=1.0`` and each group's ``lr`` a multiplier (muP's
    ``1 / width_mult``).

    Sources: arXiv 2408.13359, equations 7 and 8 and sections 4 and 5 (``a = 4``, ``b =
    -0.51``, ``lr_max = 0.02``; ``batch_size`` counts sequences and ``n`` tokens); IBM's
    reference, ``PowerScheduler`` in dolomite-engine's ``optimization/scheduler.py``, has the
    same warmup and power phases and no decay. Where this one chooses:

    - The paper's decay, ``f(n, N, N_decay) * power(N - N_decay)``, does not state ``f``; its
      experiments "exponentially decay the learning rate to 0". A plain exponential never
      reaches 0, so ``f`` here is dolomite-engine's ``exponential`` decay style with a final
      ratio of 0: ``exp(-p)`` shifted and scaled to run from 1 at ``p = 0`` to exactly 0 at
      ``p = 1``.
    - The paper counts the phases in tokens; here they are whole steps of ``tokens_per_step``
      tokens (the paper's batches are fixed, so its boundaries are steps too).
    - At ``n = 0`` (step 0 without a warmup) ``n ** b`` is infinite; the factor is its limit,
      ``lr_max``. (dolomite-engine raises ZeroDivisionError there.)

    Args:
        optimizer: The optimizer; each group's ``lr`` multiplies the schedule (1.0 follows it).
        batch_size: Sequences per step (the paper's beta).
        tokens_per_step: Tokens per step, usually ``batch_size`` times the sequence length.
        a: The amplitude, > 0.
        b: The exponent of the tokens seen, < 0.
        lr_max: The upper bound of the learning rate, > 0.
        warmup_steps: Steps of the linear warmup.
        decay_steps: Steps of the final decay; 0 for none (dolomite-engine's schedule).
        total_steps: The steps of the whole run, which place the decay at its end; needed
            only with a decay. ``None``: no end.
        last_epoch: Steps already taken, when resuming without a ``state_dict`` (``-1``: none).

    Raises:
        ConfigError: A count that is not a non-negative integer (a size that is not positive),
            ``a`` or ``lr_max`` not a positive finite number, ``b`` not a negative one, a
            decay without ``total_steps``, or warmup and decay longer than ``total_steps``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        batch_size: int,
        tokens_per_step: int,
        a: float = 4.0,
        b: float = -0.51,
        lr_max: float = 0.02,
        warmup_steps: int,
        decay_steps: int = 0,
        total_steps: int | None = None,
        last_epoch: int = -1,
    ) -> None:
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.tokens_per_step = _positive_int(tokens_per_step, "tokens_per_step")
        self.a = _signed(a, "a", sign=1, paper="4.0")
        self.b = _signed(b, "b", sign=-1, paper="-0.51")
        self.lr_max = _signed(lr_max, "lr_max", sign=1, paper="0.02")
        self.warmup_steps = _steps(warmup_steps, "warmup_steps")
        self.decay_steps = _steps(decay_steps, "decay_steps")
        self.total_steps = None if total_steps is None else _steps(total_steps, "total_steps")
        if self.total_steps is None:
            if self.decay_steps > 0:
                raise ConfigError(
                    f"is needed with a decay, to place it at the end of the run, but got None "
                    f"with decay_steps={self.decay_steps}; give total_steps, or decay_steps=0",
                    path=("total_steps",),
                )
        elif self.warmup_steps > self.total_steps:
            raise ConfigError(
                f"must be <= total_steps ({self.total_steps}), but got {self.warmup_steps}",
                path=("warmup_steps",),
            )
        elif self.warmup_steps + self.decay_steps > self.total_steps:
            raise ConfigError(
                f"warmup_steps + decay_steps must be <= total_steps ({self.total_steps}), but "
                f"got {self.warmup_steps} + {self.decay_steps}; shorten the decay or the warmup",
                path=("decay_steps",),
            )
        super().__init__(optimizer, last_epoch)

    def _power(self, step: int) -> float:
        """``power(n)`` of the tokens seen after ``step`` steps; ``lr_max`` at ``n = 0``."""
        tokens = step * self.tokens_per_step
        if tokens <= 0:
            return self.lr_max
        return min(self.lr_max, self.batch_size * self.a * float(tokens) ** self.b)

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps * self._power(self.warmup_steps)
        if self.total_steps is None or self.decay_steps == 0:
            return self._power(step)
        start = self.total_steps - self.decay_steps
        if step <= start:
            return self._power(step)
        if step >= self.total_steps:
            return 0.0
        progress = (step - start) / self.decay_steps
        return _exponential_to_zero(progress) * self._power(start)


def _exponential_to_zero(progress: float) -> float:
    """``exp(-progress)`` moved and scaled to fall from 1 (progress 0) to 0 (progress 1)."""
    return max(0.0, (math.exp(1.0 - progress) - 1.0) / (math.e - 1.0))


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


def _positive_int(value: Any, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"must be an integer >= 1, but got {describe(value)}", path=(name,))
    return int(value)


def _signed(value: Any, name: str, *, sign: int, paper: str) -> float:
    """A finite number of the sign of ``sign`` (not 0)."""
    if not (_is_number(value) and math.isfinite(value) and value * sign > 0):
        raise ConfigError(
            f"must be a finite number {'>' if sign > 0 else '<'} 0, but got {describe(value)} "
            f"(the paper's is {paper})",
            path=(name,),
        )
    return float(value)


def _shape(value: Any, name: str) -> str:
    if value not in _SHAPES:
        raise ConfigError(
            f"must be one of {', '.join(_SHAPES)}, but got {describe(value)}", path=(name,)
        )
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
