"""Typed parameters of a search space and the condition that switches one on.

Every parameter is a frozen dataclass validated on construction: a parameter that exists is
valid on its own. What depends on other parameters (unique names, condition parents) is checked
by :class:`~paretune.spaces.SearchSpace`.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import KW_ONLY, dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from paretune._errors import ConfigError, describe

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

__all__ = ["Categorical", "Condition", "Fixed", "Float", "Int", "Parameter"]

# Optuna's RDB storage keeps parameter names in an indexed VARCHAR(512).
_MAX_NAME_LENGTH = 512
# Tolerance on `(high - low) / step` being whole, so that 0.1-style steps pass despite rounding.
_STEP_RTOL = 1e-8
_CHOICE_TYPES = "None, bool, int, float or str"


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def same_value(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same stored value.

    Like ``==``, except that booleans never equal numbers: ``True == 1`` in Python, but a
    categorical choice ``True`` is not the choice ``1``.
    """
    if _is_bool(a) != _is_bool(b):
        return False
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _as_choice(value: Any, *, path: tuple[str | int, ...]) -> CategoricalChoiceType:
    """``value`` as a plain Python value Optuna can store, or a ConfigError."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"values must be finite, but got {value!r}.", path=path)
        return value
    raise ConfigError(
        f"values must be {_CHOICE_TYPES} (the types Optuna can store), but got "
        f"{describe(value)} of type {type(value).__name__}.",
        path=path,
    )


def _as_float(value: Any, *, path: tuple[str | int, ...]) -> float:
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise ConfigError(f"`{path[-1]}` must be a number, but got {describe(value)}.", path=path)
    result = float(value)
    if not math.isfinite(result):
        raise ConfigError(f"`{path[-1]}` must be finite, but got {result!r}.", path=path)
    return result


def _as_int(value: Any, *, path: tuple[str | int, ...]) -> int:
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"`{path[-1]}` must be an integer, but got {describe(value)}.", path=path)
    return int(value)


def _as_bool(value: Any, *, path: tuple[str | int, ...]) -> bool:
    if not _is_bool(value):
        raise ConfigError(
            f"`{path[-1]}` must be true or false, but got {describe(value)}.", path=path
        )
    return bool(value)


@dataclass(frozen=True)
class Condition:
    """Makes a parameter active only when an earlier parameter takes one of some values.

    The parameter carrying the condition is active when ``parent`` is active and its value is
    one of ``values``; conditions chain (a parent may itself be conditional). The space checks
    that ``parent`` is declared earlier and that each of ``values`` is a valid value of it.

    Args:
        parent: Name of the parameter this one depends on.
        values: The parent's values that activate this parameter; a single value is accepted
            for a one-element tuple.
    """

    parent: str
    values: tuple[CategoricalChoiceType, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.parent, str) or not self.parent:
            raise ConfigError(
                f"`parent` must be the name of an earlier parameter, but got "
                f"{describe(self.parent)}.",
                path=("condition", "parent"),
            )
        values = self.values
        values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
        if not values:
            raise ConfigError(
                "`values` must list at least one value of the parent, but got an empty list.",
                path=("condition", "values"),
            )
        values = tuple(_as_choice(v, path=("condition", "values")) for v in values)
        object.__setattr__(self, "values", values)

    def matches(self, value: Any) -> bool:
        """Whether the parent's ``value`` activates the conditioned parameter."""
        return any(same_value(value, v) for v in self.values)


class Parameter(ABC):
    """One quantity of a search space: searched (Float, Int, Categorical) or fixed.

    Subclasses are frozen dataclasses taking ``name`` positionally and everything else by
    keyword; they validate themselves in ``__post_init__`` and raise :class:`ConfigError` with
    the path ``(name, field)``. A space turns them into Optuna distributions
    (:meth:`to_optuna`), samples them in declaration order, and encodes them for BoTorch
    (:class:`~paretune.spaces.Encoding`).

    The value codec is public, for every package that handles params: :meth:`contains` (is a
    value valid), :meth:`canonical` (its stored form, e.g. to compare or hash params) and
    :meth:`sample` (a random value).

    Attributes:
        name: The Optuna parameter name.
        condition: When set, the parameter exists only if the condition holds.
    """

    type_name: ClassVar[str]
    """The ``type`` key of the parameter in the dictionary (YAML) form."""

    name: str
    condition: Condition | None

    @abstractmethod
    def to_optuna(self) -> BaseDistribution:
        """The Optuna distribution that samples and stores this parameter."""

    @abstractmethod
    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a valid value of this parameter."""

    @abstractmethod
    def canonical(self, value: Any) -> Any:
        """The stored form of a contained ``value`` (a plain int, float or the choice itself):
        two values the parameter treats as one (``3`` and ``3.0`` for an Int, ``0.1 + 0.2``
        and ``0.3`` on a 0.1 grid) have the same canonical form."""

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Any:
        """A random value: uniform, or log-uniform for log ranges."""

    @abstractmethod
    def _suggest(self, trial: BaseTrial) -> Any:
        """The value ``trial`` suggests for this parameter."""

    def _check_common(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name or len(name) > _MAX_NAME_LENGTH:
            raise ConfigError(
                f"parameter names must be non-empty strings of at most {_MAX_NAME_LENGTH} "
                f"characters (Optuna's storage limit), but got {describe(name)}.",
                path=("name",),
            )
        if self.condition is not None and not isinstance(self.condition, Condition):
            raise ConfigError(
                f"`condition` must be a Condition(parent, values) or None, but got "
                f"{describe(self.condition)}.",
                path=(name, "condition"),
            )


@dataclass(frozen=True)
class Float(Parameter):
    """A real number in ``[low, high]``.

    Args:
        name: Parameter name.
        low: Lower bound (inclusive).
        high: Upper bound (inclusive); ``low == high`` is a valid, single-value range.
        log: Sample and encode in log space; requires ``low > 0`` and no ``step``.
        step: Restrict values to ``low + k * step``; ``high - low`` must be a multiple of it
            (``high`` is snapped onto the grid within a relative 1e-8).
        condition: When the parameter is active.
    """

    name: str
    _: KW_ONLY
    low: float
    high: float
    log: bool = False
    step: float | None = None
    condition: Condition | None = None

    type_name = "float"

    def __post_init__(self) -> None:
        self._check_common()
        name = self.name
        low = _as_float(self.low, path=(name, "low"))
        high = _as_float(self.high, path=(name, "high"))
        log = _as_bool(self.log, path=(name, "log"))
        if low > high:
            raise ConfigError(
                f"`low <= high` must hold, but got (low={low!r}, high={high!r}). Swap them.",
                path=(name, "low"),
            )
        step = None
        if log:
            if self.step is not None:
                raise ConfigError(
                    f"`step` must be unset when `log` is true, but got step={self.step!r}. "
                    "Drop `step` or set `log` to false.",
                    path=(name, "step"),
                )
            if low <= 0.0:
                raise ConfigError(
                    f"`low > 0` must hold for `log=True`, but got (low={low!r}, high={high!r}). "
                    "Use a positive lower bound or `log=False`.",
                    path=(name, "low"),
                )
        elif self.step is not None:
            step = _as_float(self.step, path=(name, "step"))
            if step <= 0.0:
                raise ConfigError(
                    f"`step > 0` must hold, but got step={step!r}.", path=(name, "step")
                )
            n = (high - low) / step
            if abs(n - round(n)) > _STEP_RTOL * max(1.0, n):
                raise ConfigError(
                    f"`high - low` must be a multiple of `step`, but got (low={low!r}, "
                    f"high={high!r}, step={step!r}). Use high={_grid(low, step, math.floor(n))!r} "
                    "or a step that divides the range.",
                    path=(name, "step"),
                )
            # Snap `high` onto the decimal grid so Optuna sees an exact multiple and never
            # narrows the range with a warning.
            high = _grid(low, step, round(n))
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "log", log)
        object.__setattr__(self, "step", step)

    @property
    def n_steps(self) -> int | None:
        """Number of steps between ``low`` and ``high`` (``None`` without ``step``)."""
        if self.step is None:
            return None
        return round((self.high - self.low) / self.step)

    def grid_value(self, k: int) -> float:
        """The ``k``-th allowed value ``low + k * step``, rounded as its decimal would be."""
        if self.step is None:
            raise ValueError(f"{self.name!r} has no step, so it has no grid.")
        return _grid(self.low, self.step, k)

    def to_optuna(self) -> FloatDistribution:
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def contains(self, value: Any) -> bool:
        if _is_bool(value) or not isinstance(value, numbers.Real):
            return False
        v = float(value)
        if self.step is None:
            return self.low <= v <= self.high
        k = (v - self.low) / self.step
        # Rounding may put a grid value just outside the range (0.1 + 0.2 > 0.3).
        return -_STEP_RTOL < k < (self.n_steps or 0) + _STEP_RTOL and abs(k - round(k)) < _STEP_RTOL

    def canonical(self, value: Any) -> float:
        if self.step is None:
            return float(value)
        return self.grid_value(round((float(value) - self.low) / self.step))

    def sample(self, rng: np.random.Generator) -> float:
        if self.step is not None:
            return self.grid_value(int(rng.integers(0, (self.n_steps or 0) + 1)))
        if self.log:
            v = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
            return min(max(v, self.low), self.high)
        return float(rng.uniform(self.low, self.high))

    def _suggest(self, trial: BaseTrial) -> float:
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)


def _grid(low: float, step: float, k: int) -> float:
    # Decimal arithmetic on the shortest reprs gives 0.3, not 0.30000000000000004.
    return float(Decimal(repr(low)) + k * Decimal(repr(step)))


@dataclass(frozen=True)
class Int(Parameter):
    """An integer in ``[low, high]`` on the grid ``low + k * step``.

    Args:
        name: Parameter name.
        low: Lower bound (inclusive).
        high: Upper bound (inclusive); ``high - low`` must be a multiple of ``step``.
        log: Sample and encode in log space; requires ``low >= 1`` and ``step == 1``.
        step: Spacing of allowed values, at least 1.
        condition: When the parameter is active.
    """

    name: str
    _: KW_ONLY
    low: int
    high: int
    log: bool = False
    step: int = 1
    condition: Condition | None = None

    type_name = "int"

    def __post_init__(self) -> None:
        self._check_common()
        name = self.name
        low = _as_int(self.low, path=(name, "low"))
        high = _as_int(self.high, path=(name, "high"))
        log = _as_bool(self.log, path=(name, "log"))
        step = _as_int(self.step, path=(name, "step"))
        if low > high:
            raise ConfigError(
                f"`low <= high` must hold, but got (low={low}, high={high}). Swap them.",
                path=(name, "low"),
            )
        if step < 1:
            raise ConfigError(f"`step >= 1` must hold, but got step={step}.", path=(name, "step"))
        if log and step != 1:
            raise ConfigError(
                f"`step` must be 1 when `log` is true, but got step={step}. "
                "Drop `step` or set `log` to false.",
                path=(name, "step"),
            )
        if log and low < 1:
            raise ConfigError(
                f"`low >= 1` must hold for `log=True`, but got (low={low}, high={high}). "
                "Use low >= 1 or `log=False`.",
                path=(name, "low"),
            )
        if (high - low) % step:
            raise ConfigError(
                f"`high - low` must be a multiple of `step`, but got (low={low}, high={high}, "
                f"step={step}). Use high={high - (high - low) % step} or another step.",
                path=(name, "step"),
            )
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "log", log)
        object.__setattr__(self, "step", step)

    @property
    def n_steps(self) -> int:
        """Number of steps between ``low`` and ``high``."""
        return (self.high - self.low) // self.step

    def to_optuna(self) -> IntDistribution:
        return IntDistribution(self.low, self.high, log=self.log, step=self.step)

    def contains(self, value: Any) -> bool:
        if _is_bool(value):
            return False
        if isinstance(value, numbers.Integral):
            v = int(value)
        elif isinstance(value, numbers.Real) and float(value).is_integer():
            v = int(float(value))
        else:
            return False
        return self.low <= v <= self.high and (v - self.low) % self.step == 0

    def canonical(self, value: Any) -> int:
        return int(value)

    def sample(self, rng: np.random.Generator) -> int:
        if self.log:
            # Widen by half an integer so that the end points are as likely as their neighbours.
            z = rng.uniform(math.log(self.low - 0.5), math.log(self.high + 0.5))
            return min(max(round(math.exp(z)), self.low), self.high)
        return self.low + self.step * int(rng.integers(0, self.n_steps + 1))

    def _suggest(self, trial: BaseTrial) -> int:
        return trial.suggest_int(self.name, self.low, self.high, step=self.step, log=self.log)


@dataclass(frozen=True)
class Categorical(Parameter):
    """One of a fixed tuple of choices.

    Args:
        name: Parameter name.
        choices: Non-empty sequence of distinct values of type None, bool, int, float or str
            (stored as a tuple). ``1`` and ``1.0`` are the same choice, and so are ``True`` and
            ``1`` (Optuna stores them alike), so neither pair may appear together.
        condition: When the parameter is active.
        ordered: The choices are listed in an order that matters: neighbours are similar
            (adapter sizes, LoRA ranks). Model-based controllers then treat the parameter as
            a discrete ordinal dimension (choice ``k`` of ``n`` at ``k / (n - 1)``) instead of
            unordered categories. Optuna stores it as the same categorical distribution.
    """

    name: str
    _: KW_ONLY
    choices: tuple[CategoricalChoiceType, ...]
    condition: Condition | None = None
    ordered: bool = False

    type_name = "categorical"

    def __post_init__(self) -> None:
        self._check_common()
        path = (self.name, "choices")
        if not isinstance(self.choices, (list, tuple)):
            raise ConfigError(
                f"`choices` must be a list of values, but got {describe(self.choices)}.",
                path=path,
            )
        if not self.choices:
            raise ConfigError("`choices` must not be empty, but got [].", path=path)
        choices = tuple(_as_choice(c, path=path) for c in self.choices)
        seen: dict[Any, Any] = {}
        for c in choices:
            if c in seen:
                if _is_bool(c) != _is_bool(seen[c]):
                    raise ConfigError(
                        f"`choices` holds both {seen[c]!r} and {c!r}, which Optuna stores as "
                        "the same choice; use other values (e.g. strings) for one of them.",
                        path=path,
                    )
                raise ConfigError(
                    f"`choices` must be distinct, but {c!r} appears twice in {list(choices)!r}.",
                    path=path,
                )
            seen[c] = c
        object.__setattr__(self, "choices", choices)
        if not isinstance(self.ordered, bool):
            raise ConfigError(
                f"`ordered` must be true or false, but got {describe(self.ordered)}.",
                path=(self.name, "ordered"),
            )

    def index(self, value: Any) -> int:
        """Position of ``value`` in :attr:`choices`.

        Raises:
            ValueError: ``value`` is not one of the choices.
        """
        for i, c in enumerate(self.choices):
            if same_value(value, c):
                return i
        raise ValueError(f"{value!r} is not one of {list(self.choices)!r}.")

    def to_optuna(self) -> CategoricalDistribution:
        return CategoricalDistribution(self.choices)

    def contains(self, value: Any) -> bool:
        return any(same_value(value, c) for c in self.choices)

    def canonical(self, value: Any) -> CategoricalChoiceType:
        return self.choices[self.index(value)]

    def sample(self, rng: np.random.Generator) -> CategoricalChoiceType:
        return self.choices[int(rng.integers(len(self.choices)))]

    def _suggest(self, trial: BaseTrial) -> CategoricalChoiceType:
        return trial.suggest_categorical(self.name, self.choices)


@dataclass(frozen=True)
class Fixed(Parameter):
    """A constant that is recorded with every trial where it is active.

    It is stored in Optuna as a one-choice categorical, so the value shows in the trial's
    params (and in MLflow) even though nothing searches it.

    Args:
        name: Parameter name.
        value: The constant: None, bool, int, float or str.
        condition: When the parameter is active.
    """

    name: str
    _: KW_ONLY
    value: CategoricalChoiceType
    condition: Condition | None = None

    type_name = "fixed"

    def __post_init__(self) -> None:
        self._check_common()
        object.__setattr__(self, "value", _as_choice(self.value, path=(self.name, "value")))

    def to_optuna(self) -> CategoricalDistribution:
        return CategoricalDistribution([self.value])

    def contains(self, value: Any) -> bool:
        return same_value(value, self.value)

    def canonical(self, value: Any) -> CategoricalChoiceType:
        return self.value

    def sample(self, rng: np.random.Generator) -> CategoricalChoiceType:
        return self.value

    def _suggest(self, trial: BaseTrial) -> CategoricalChoiceType:
        return trial.suggest_categorical(self.name, [self.value])


PARAMETER_TYPES: dict[str, type[Parameter]] = {
    cls.type_name: cls for cls in (Float, Int, Categorical, Fixed)
}
