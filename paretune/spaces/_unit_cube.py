"""A search space as points of the unit cube, the box BoTorch's models and optimisers work in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from paretune.spaces._encoding import DimKind, Encoding, as_rows
from paretune.spaces._space import SearchSpace

if TYPE_CHECKING:
    import torch

__all__ = ["UnitCube"]


class UnitCube:
    """The columns of ``Encoding(space, categorical="index")`` that vary, each mapped linearly
    from its bounds onto ``[0, 1]``.

    * A column with bounds ``[0, 0]`` (a single-value range, a one-choice categorical) is
      dropped: it holds no information, and a GP cannot learn a lengthscale along it.
      ``Fixed`` parameters have no column in the encoding to begin with.
    * Float, Int and ordered Categorical columns already span ``[0, 1]`` and keep their
      values (:class:`Encoding` documents them: linear or log scale, grids at ``k / n``).
    * An unordered Categorical's index column, ``[0, k - 1]``, puts choice ``i`` at
      ``i / (k - 1)``: the cube's categorical coordinates are still category labels, not an
      order.

    Inactive conditional parameters are zeros, as in the encoding. :meth:`decode` snaps any
    point of the cube to a valid params dict the way :meth:`Encoding.decode` does.

    Args:
        space: The space to encode.

    Attributes:
        space: The encoded space.
        encoding: The underlying index-mode :class:`Encoding`.
        dim: Number of cube columns ``d``.
        kinds: The kind of each cube column.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.encoding = enc = Encoding(space, categorical="index")
        bounds = enc.bounds.numpy()
        self._lower = bounds[0]
        self._span = bounds[1] - bounds[0]
        self._free = np.flatnonzero(self._span > 0)
        self._position = {int(c): i for i, c in enumerate(self._free)}
        self.dim: int = len(self._free)
        self.kinds: tuple[DimKind, ...] = tuple(enc.kinds[c] for c in self._free)

    def __repr__(self) -> str:
        return f"UnitCube(dim={self.dim}, space={self.space!r})"

    @property
    def bounds(self) -> torch.Tensor:
        """The cube, ``[0, 1]`` in every column: a ``2 x d`` float64 tensor."""
        import torch

        return torch.stack(
            [torch.zeros(self.dim, dtype=torch.float64), torch.ones(self.dim, dtype=torch.float64)]
        )

    def column(self, name: str) -> int | None:
        """The cube column of parameter ``name``; ``None`` when it has none (``Fixed``, a
        single value).

        Raises:
            KeyError: ``name`` is not in the space.
        """
        cols = self.encoding.columns(name)
        if cols.stop - cols.start != 1:
            return None
        return self._position.get(cols.start)

    def values(self, name: str) -> list[float] | None:
        """The sorted cube positions of parameter ``name``'s values: those of its grid
        (``Int``, ``Float`` with ``step``, ordered ``Categorical``) or of its choices (choice
        ``i`` of an unordered ``Categorical`` at ``i / (k - 1)``); ``None`` for a continuous
        column or none. A grid of a million values gives a million floats: check
        ``encoding.n_values(name)`` first where that matters.

        Raises:
            KeyError: ``name`` is not in the space.
        """
        col = self.column(name)
        if col is None or self.kinds[col] is DimKind.CONTINUOUS:
            return None
        c = self._free[col]
        lower, span = self._lower[c], self._span[c]
        if self.kinds[col] is DimKind.CATEGORICAL:
            encoded: Sequence[float] = range(self.encoding.n_values(name) or 0)
        else:
            encoded = self.encoding.grid_positions(name) or []
        return [(v - lower) / span for v in encoded]

    def encode(
        self, params_list: Sequence[Mapping[str, Any]], *, partial: bool = False
    ) -> torch.Tensor:
        """Encode params dicts as an ``n x d`` float64 tensor of cube points.

        Args:
            params_list: The params dicts.
            partial: As in :meth:`Encoding.encode_numpy`: accept dicts that miss parameters or
                hold values outside their range (encoded as inactive). Default: validate.

        Raises:
            ConfigError: A params dict that :meth:`SearchSpace.validate` rejects (unless
                ``partial``).
        """
        import torch

        X = self.encoding.encode(params_list, partial=partial)
        lower = torch.from_numpy(self._lower[self._free])
        span = torch.from_numpy(self._span[self._free])
        return (X[:, self._free] - lower) / span

    def decode(self, X: torch.Tensor | np.ndarray) -> list[dict[str, Any]]:
        """Snap each row of an ``n x d`` tensor or array of cube points to a valid params dict
        (see :meth:`Encoding.decode`); a dropped column decodes to its single value.

        Raises:
            ConfigError: ``X`` is not ``n x d`` or holds NaN or infinity.
        """
        X = as_rows(X, self.dim)
        full = np.tile(self._lower, (X.shape[0], 1))
        full[:, self._free] = X * self._span[self._free] + self._lower[self._free]
        return self.encoding.decode(full)
