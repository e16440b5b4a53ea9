"""The space as BoTorch sees it: unit-cube columns and how the optimiser moves along them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from paretune._errors import ConfigError
from paretune.spaces import DimKind, SearchSpace, UnitCube

if TYPE_CHECKING:
    import torch

# Grids with more levels are optimised as continuous columns and rounded when decoded: BoTorch
# relaxes grids of over 20 levels anyway, and rounds them with a batch x levels tensor.
MAX_GRID_LEVELS = 256


class Problem:
    """The space as BoTorch sees it: unit-cube columns, and their kinds for the optimiser.

    The columns are the space's :class:`~paretune.spaces.UnitCube` (single values dropped,
    categorical indices scaled to ``[0, 1]``). Two-choice categoricals are treated as binary
    discrete columns (a categorical kernel on two values is a stationary kernel on
    ``{0, 1}``); those with three or more choices get the categorical kernel and the
    optimiser's categorical moves. Grids of more than 256 levels are continuous columns for
    the optimiser, rounded on decoding.

    Attributes:
        space: The modelled space.
        exact: The space is the user's (conditions known), not a union of trials' params.
        cube: The space's unit cube.
        dim: Number of cube columns.
        discrete: Column to allowed values, for the optimiser's discrete moves.
        categorical: Column to allowed values, for its categorical moves and the kernel.
    """

    def __init__(self, space: SearchSpace, *, exact: bool) -> None:
        self.space = space
        self.exact = exact
        self.cube = cube = UnitCube(space)
        self.dim = cube.dim
        self.discrete: dict[int, list[float]] = {}
        self.categorical: dict[int, list[float]] = {}
        columns = [(p.name, cube.column(p.name)) for p in space]
        for name, col in columns:
            if col is None or cube.kinds[col] is not DimKind.INTEGER:
                continue
            if (cube.encoding.n_values(name) or 0) <= MAX_GRID_LEVELS:
                self.discrete[col] = cube.values(name) or []
        for name, col in columns:
            if col is None or cube.kinds[col] is not DimKind.CATEGORICAL:
                continue
            values = cube.values(name) or []
            if len(values) == 2:
                self.discrete[col] = values
            else:
                self.categorical[col] = values

    def covers(self, params: Mapping[str, Any]) -> bool:
        """Whether a trial's params are valid here (all of them, when the space is known)."""
        if self.exact:
            try:
                self.space.validate(params)
            except ConfigError:
                return False
            return True
        return all(
            name not in self.space or self.space[name].contains(value)
            for name, value in params.items()
        )

    def decode(self, X_unit: torch.Tensor) -> dict[str, Any]:
        """The params the first row of a cube tensor snaps to."""
        return self.cube.decode(X_unit)[0]
