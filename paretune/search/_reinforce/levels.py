"""The actions of the policy: the finite set of values each parameter is chosen from."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from paretune.spaces import Categorical, Fixed, Float, Int, Parameter


@dataclass(frozen=True)
class Levels:
    """The values one factor of the policy chooses among, in increasing order for numbers.

    Categorical and fixed parameters choose among their choices. Int parameters choose among
    all their values when there are at most ``bins``, else among ``bins`` values spread evenly
    over the range (in log space for ``log``), rounded onto the step grid and deduplicated, so
    a log int may get fewer. Float parameters choose among ``bins`` values spread the same way
    (on the ``step`` grid when there is one, all grid values when it holds at most ``bins``).
    The range's ends are always levels.

    Attributes:
        param: The parameter.
        values: The levels, as the parameter stores them (plain ``int``, ``float`` or choice).
    """

    param: Parameter
    values: tuple[Any, ...]

    @classmethod
    def of(cls, param: Parameter, *, bins: int) -> Levels:
        """The levels of ``param`` with at most ``bins`` values for a numeric range."""
        if isinstance(param, Categorical):
            return cls(param, param.choices)
        if isinstance(param, Fixed):
            return cls(param, (param.value,))
        if isinstance(param, Int):
            return cls(param, _int_levels(param, bins))
        if isinstance(param, Float):
            return cls(param, _float_levels(param, bins))
        raise TypeError(f"no levels for {type(param).__name__} parameters")

    def __len__(self) -> int:
        return len(self.values)

    def index(self, value: Any) -> int | None:
        """The level a trial's ``value`` counts as: its own, or the nearest one (in log space
        for ``log`` ranges) for a number between levels; ``None`` for a value the parameter
        cannot take (the space changed since the trial ran)."""
        param = self.param
        if not param.contains(value):
            return None
        if isinstance(param, Categorical):
            return param.index(value)
        if isinstance(param, Fixed):
            return 0
        assert isinstance(param, (Int, Float))
        at = _coordinate(param, float(value))
        return int(np.argmin([abs(_coordinate(param, float(v)) - at) for v in self.values]))


def _coordinate(param: Int | Float, value: float) -> float:
    return math.log(value) if param.log else value


def _int_levels(param: Int, bins: int) -> tuple[int, ...]:
    n = param.n_steps
    if n + 1 <= bins:
        return tuple(param.low + k * param.step for k in range(n + 1))
    if param.log:
        spread = np.geomspace(param.low, param.high, bins)
        values = {min(max(round(float(v)), param.low), param.high) for v in spread}
    else:
        ks = np.rint(np.linspace(0, n, bins)).astype(int)
        values = {param.low + int(k) * param.step for k in ks}
    return tuple(sorted(values | {param.low, param.high}))


def _float_levels(param: Float, bins: int) -> tuple[float, ...]:
    if param.low == param.high:
        return (param.low,)
    if param.step is not None:
        n = param.n_steps or 0
        ks: Sequence[int] = range(n + 1)
        if n + 1 > bins:
            ks = sorted(set(np.rint(np.linspace(0, n, bins)).astype(int).tolist()))
        return tuple(param.grid_value(k) for k in ks)
    spread = (
        np.geomspace(param.low, param.high, bins)
        if param.log
        else np.linspace(param.low, param.high, bins)
    )
    inner = [min(max(float(v), param.low), param.high) for v in spread[1:-1]]
    return tuple(sorted({param.low, *inner, param.high}))
