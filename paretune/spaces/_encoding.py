"""The numeric encoding of a search space that BoTorch models and optimisers work on."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from paretune._errors import ConfigError, describe
from paretune.spaces._params import Categorical, Fixed, Float, Int, Parameter
from paretune.spaces._space import SearchSpace

if TYPE_CHECKING:
    import torch

__all__ = ["DimKind", "Encoding", "as_rows"]


class DimKind(enum.Enum):
    """What values a column of an encoding takes."""

    CONTINUOUS = "continuous"
    """Any real number within the column's bounds."""
    INTEGER = "integer"
    """One of the column's ``discrete_values`` (ordered: nearby values are similar)."""
    CATEGORICAL = "categorical"
    """A one-hot indicator or a category index (unordered)."""


class _Codec:
    """Maps one parameter to ``width`` columns and back; the columns of inactive params are 0."""

    width: int
    kinds: tuple[DimKind, ...]
    n_values: int | None  # None: a continuum
    lower: tuple[float, ...]
    upper: tuple[float, ...]

    def __init__(self, param: Parameter) -> None:
        self.param = param

    def encode(self, value: Any) -> list[float]:
        raise NotImplementedError

    def decode(self, x: np.ndarray) -> Any:
        raise NotImplementedError

    def discrete_values(self) -> list[float] | None:
        return None


class _Continuous(_Codec):
    """Float without step: ``(v - low) / (high - low)``, or the same on ``log(v)``."""

    def __init__(self, param: Float) -> None:
        super().__init__(param)
        self.p = param
        self.single = param.low == param.high
        f = math.log if param.log else float
        self.lo, self.hi = f(param.low), f(param.high)
        self.width, self.kinds, self.n_values = 1, (DimKind.CONTINUOUS,), None
        self.lower, self.upper = (0.0,), (0.0 if self.single else 1.0,)

    def encode(self, value: float) -> list[float]:
        if self.single:
            return [0.0]
        z = math.log(value) if self.p.log else value
        return [min(max((z - self.lo) / (self.hi - self.lo), 0.0), 1.0)]

    def decode(self, x: np.ndarray) -> float:
        t = min(max(float(x[0]), 0.0), 1.0)
        if self.single or t == 0.0:
            return self.p.low
        if t == 1.0:
            return self.p.high
        z = self.lo + t * (self.hi - self.lo)
        v = math.exp(z) if self.p.log else z
        return min(max(v, self.p.low), self.p.high)


class _Grid(_Codec):
    """Int, or Float with step: value number ``k`` of ``n + 1`` sits at ``k / n``.

    Log ints sit at ``(log(v) - log(low)) / (log(high) - log(low))`` instead.
    """

    def __init__(self, param: Int | Float, *, n: int, step: float) -> None:
        super().__init__(param)
        self.p = param
        self.n, self.step, self.log = n, step, param.log
        if self.log:
            self.lo, self.span = math.log(param.low), math.log(param.high) - math.log(param.low)
        self.width, self.kinds, self.n_values = 1, (DimKind.INTEGER,), n + 1
        self.lower, self.upper = (0.0,), (0.0 if n == 0 else 1.0,)

    def value(self, k: int) -> int | float:
        if isinstance(self.p, Float):
            return self.p.grid_value(k)
        return self.p.low + k * self.p.step

    def position(self, k: int) -> float:
        if self.n == 0:
            return 0.0
        if not self.log or k in (0, self.n):
            return k / self.n
        return (math.log(self.value(k)) - self.lo) / self.span

    def encode(self, value: float) -> list[float]:
        return [self.position(round((value - self.p.low) / self.step))]

    def decode(self, x: np.ndarray) -> int | float:
        t = min(max(float(x[0]), 0.0), 1.0)
        if self.n == 0:
            return self.value(0)
        if not self.log:
            return self.value(math.floor(t * self.n + 0.5))
        # exp() lands between two integers (up to rounding): keep the nearer in encoded space.
        guess = math.floor(math.exp(self.lo + t * self.span) - self.p.low)
        candidates = {min(max(k, 0), self.n) for k in (guess - 1, guess, guess + 1, guess + 2)}
        return self.value(min(sorted(candidates), key=lambda k: abs(self.position(k) - t)))

    def discrete_values(self) -> list[float]:
        return [self.position(k) for k in range(self.n + 1)]


class _OneHot(_Codec):
    """Categorical as ``k`` indicator columns; decoding takes the argmax (first on ties)."""

    def __init__(self, param: Categorical) -> None:
        super().__init__(param)
        self.p = param
        k = len(param.choices)
        self.width, self.kinds, self.n_values = k, (DimKind.CATEGORICAL,) * k, k
        self.lower, self.upper = (0.0,) * k, (1.0,) * k

    def encode(self, value: Any) -> list[float]:
        row = [0.0] * self.width
        row[self.p.index(value)] = 1.0
        return row

    def decode(self, x: np.ndarray) -> Any:
        return self.p.choices[int(np.argmax(x))]


class _Index(_Codec):
    """Categorical as one column holding the choice's index ``0..k-1``."""

    def __init__(self, param: Categorical) -> None:
        super().__init__(param)
        self.p = param
        self.width, self.kinds, self.n_values = 1, (DimKind.CATEGORICAL,), len(param.choices)
        self.lower, self.upper = (0.0,), (float(len(param.choices) - 1),)

    def encode(self, value: Any) -> list[float]:
        return [float(self.p.index(value))]

    def decode(self, x: np.ndarray) -> Any:
        k = math.floor(min(max(float(x[0]), 0.0), self.upper[0]) + 0.5)
        return self.p.choices[k]


class _Ordered(_Codec):
    """Ordered categorical: choice ``k`` of ``n`` at ``k / (n - 1)`` in one ``INTEGER`` column."""

    def __init__(self, param: Categorical) -> None:
        super().__init__(param)
        self.p = param
        self.n = len(param.choices) - 1
        self.width, self.kinds, self.n_values = 1, (DimKind.INTEGER,), self.n + 1
        self.lower, self.upper = (0.0,), (0.0 if self.n == 0 else 1.0,)

    def encode(self, value: Any) -> list[float]:
        return [self.p.index(value) / self.n if self.n else 0.0]

    def decode(self, x: np.ndarray) -> Any:
        t = min(max(float(x[0]), 0.0), 1.0)
        return self.p.choices[math.floor(t * self.n + 0.5)]

    def discrete_values(self) -> list[float]:
        return [k / self.n for k in range(self.n + 1)] if self.n else [0.0]


class _Constant(_Codec):
    """Fixed: no columns."""

    def __init__(self, param: Fixed) -> None:
        super().__init__(param)
        self.p = param
        self.width, self.kinds, self.lower, self.upper = 0, (), (), ()
        self.n_values = 1

    def encode(self, value: Any) -> list[float]:
        return []

    def decode(self, x: np.ndarray) -> Any:
        return self.p.value


def _codec(param: Parameter, categorical: str) -> _Codec:
    if isinstance(param, Float):
        if param.step is None:
            return _Continuous(param)
        return _Grid(param, n=param.n_steps or 0, step=param.step)
    if isinstance(param, Int):
        return _Grid(param, n=param.n_steps, step=param.step)
    if isinstance(param, Categorical):
        if param.ordered:
            return _Ordered(param)
        return _OneHot(param) if categorical == "onehot" else _Index(param)
    if isinstance(param, Fixed):
        return _Constant(param)
    raise TypeError(f"no encoding for parameters of type {type(param).__name__}.")


class Encoding:
    """A search space as the numeric columns BoTorch models and optimisers work on.

    Each parameter owns a contiguous slice of columns (:meth:`columns`), in declaration order:

    * ``Float``: one column in ``[0, 1]``, linear in the value (or in its log when ``log``);
      with ``step`` it is an ``INTEGER`` column whose :attr:`discrete_values` are the grid's
      positions ``k / n``.
    * ``Int``: one ``INTEGER`` column in ``[0, 1]``, linear (or log-scaled); its
      :attr:`discrete_values` list the position of every allowed integer.
    * ``Categorical``: ``categorical="onehot"`` gives one indicator column per choice, bounds
      ``[0, 1]``; ``"index"`` gives one column holding the choice's index, bounds ``[0, k-1]``.
      An ``ordered`` one is an ``INTEGER`` column in ``[0, 1]`` in both modes, choice ``k`` of
      ``n`` at ``k / (n - 1)``, and is not in :attr:`categorical_groups`.
    * ``Fixed``: no columns.
    * A single-value range (``low == high``) keeps its column with bounds ``[0, 0]``.

    Inactive conditional parameters are encoded as zeros in all their columns (``0.0``, or an
    all-zero one-hot block) and their columns are ignored on decode. A GP therefore sees an
    inactive dimension as one constant value, which it shares with the parameter's low end
    (or first choice, for ``"index"``); the parent's columns tell the two cases apart.

    :meth:`decode` snaps any point to a valid params dict: it clips to the bounds, rounds
    ``INTEGER`` columns to the nearest allowed value in encoded space, takes the argmax of a
    one-hot block (the first on ties) and rounds an index, and decodes a child only if its
    parent's decoded value activates it. For valid ``params``, ``decode(encode([params]))``
    returns ``[params]`` (floats up to rounding), and ``encode(decode(X))`` is idempotent.

    Args:
        space: The space to encode.
        categorical: ``"onehot"`` (default) or ``"index"``.

    Attributes:
        space: The encoded space.
        categorical: The categorical mode.
        dim: Number of columns ``d``.
        kinds: The kind of each column.
        categorical_groups: For each categorical parameter, its column indices (``k`` of them
            in one-hot mode, one in index mode).
        cat_dims: Indices of all ``CATEGORICAL`` columns (the index columns in index mode,
            e.g. for ``MixedSingleTaskGP(cat_dims=...)``).
    """

    def __init__(self, space: SearchSpace, *, categorical: str = "onehot") -> None:
        if not isinstance(space, SearchSpace):
            raise ConfigError(f"`space` must be a SearchSpace, but got {describe(space)}.")
        if categorical not in ("onehot", "index"):
            raise ConfigError(
                f"`categorical` must be 'onehot' or 'index', but got {describe(categorical)}.",
                path=("categorical",),
            )
        self.space = space
        self.categorical = categorical
        self._codecs: list[tuple[_Codec, slice]] = []
        start = 0
        for param in space:
            codec = _codec(param, categorical)
            self._codecs.append((codec, slice(start, start + codec.width)))
            start += codec.width
        self._by_name = {codec.param.name: (codec, cols) for codec, cols in self._codecs}
        self.dim: int = start
        self.kinds: tuple[DimKind, ...] = tuple(k for c, _ in self._codecs for k in c.kinds)
        self._lower = np.array([b for c, _ in self._codecs for b in c.lower], dtype=np.float64)
        self._upper = np.array([b for c, _ in self._codecs for b in c.upper], dtype=np.float64)
        self.categorical_groups: dict[str, list[int]] = {
            c.param.name: list(range(cols.start, cols.stop))
            for c, cols in self._codecs
            if isinstance(c.param, Categorical) and not c.param.ordered
        }
        self.cat_dims: list[int] = [i for i, k in enumerate(self.kinds) if k is DimKind.CATEGORICAL]

    def __repr__(self) -> str:
        return f"Encoding(dim={self.dim}, categorical={self.categorical!r}, space={self.space!r})"

    @property
    def bounds(self) -> torch.Tensor:
        """Lower and upper bound of every column, a ``2 x d`` float64 tensor."""
        import torch

        return torch.from_numpy(np.stack([self._lower, self._upper]))

    @cached_property
    def discrete_values(self) -> dict[int, list[float]]:
        """For each ``INTEGER`` column, the sorted encoded positions of its allowed values.

        The lists start and end at the column's bounds, the form
        ``botorch.optim.optimize_acqf_mixed_alternating(discrete_dims=...)`` takes. Built on
        first access: an ``Int`` with a million values gives a list of a million floats.
        """
        out: dict[int, list[float]] = {}
        for codec, cols in self._codecs:
            values = codec.discrete_values()
            if values is not None:
                out[cols.start] = values
        return out

    def grid_positions(self, name: str) -> list[float] | None:
        """The sorted encoded positions of parameter ``name``'s allowed values, for an
        ``INTEGER`` column (``Int``, ``Float`` with ``step``, ordered ``Categorical``); ``None``
        for other kinds.

        Unlike :attr:`discrete_values` this builds one parameter's list only.

        Raises:
            KeyError: ``name`` is not in the space.
        """
        return self._codec(name).discrete_values()

    def _codec(self, name: str) -> _Codec:
        return self._entry(name)[0]

    def n_values(self, name: str) -> int | None:
        """How many values parameter ``name`` takes: its grid's size (``Int``, ``Float`` with
        ``step``, ordered ``Categorical``), its number of choices, 1 for ``Fixed``; ``None``
        for a ``Float`` without ``step``. Builds no list (unlike :meth:`grid_positions`).

        Raises:
            KeyError: ``name`` is not in the space.
        """
        return self._codec(name).n_values

    def columns(self, name: str) -> slice:
        """The columns of parameter ``name`` (an empty slice for ``Fixed``).

        Raises:
            KeyError: ``name`` is not in the space.
        """
        return self._entry(name)[1]

    def _entry(self, name: str) -> tuple[_Codec, slice]:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(
                f"no parameter {name!r}; the space has {list(self.space.names)}."
            ) from None

    def encode_numpy(
        self, params_list: Sequence[Mapping[str, Any]], *, partial: bool = False
    ) -> np.ndarray:
        """Encode params dicts as an ``n x d`` float64 array.

        Args:
            params_list: The params dicts.
            partial: Accept dicts that miss some parameters (a define-by-run Optuna trial that
                never asked for them) or hold values outside a parameter's range (an older
                version of the space): such parameters are encoded as inactive (zeros) and
                unknown names are ignored. Default: validate every dict.

        Raises:
            ConfigError: A params dict that :meth:`SearchSpace.validate` rejects (unless
                ``partial``); the path starts with its position in ``params_list``.
        """
        if isinstance(params_list, Mapping):
            raise ConfigError("encode takes a list of params dicts; wrap a single one in a list.")
        X = np.zeros((len(params_list), self.dim), dtype=np.float64)
        for i, params in enumerate(params_list):
            if partial:
                clean = {
                    name: self.space[name].canonical(value)
                    for name, value in params.items()
                    if name in self.space and self.space[name].contains(value)
                }
            else:
                try:
                    clean = self.space.validate(params)
                except ConfigError as err:
                    raise err.prefixed(i) from None
            for codec, cols in self._codecs:
                if codec.param.name in clean:
                    X[i, cols] = codec.encode(clean[codec.param.name])
        return X

    def encode(
        self, params_list: Sequence[Mapping[str, Any]], *, partial: bool = False
    ) -> torch.Tensor:
        """Encode params dicts as an ``n x d`` float64 tensor (see :meth:`encode_numpy`)."""
        import torch

        return torch.from_numpy(self.encode_numpy(params_list, partial=partial))

    def decode(self, X: torch.Tensor | np.ndarray) -> list[dict[str, Any]]:
        """Snap each row of an ``n x d`` tensor or array to a valid params dict.

        Rows need not lie on valid points (an optimiser's candidates, random points): see the
        class docstring for how values are snapped. Every returned dict passes
        :meth:`SearchSpace.validate`.

        Raises:
            ConfigError: ``X`` is not ``n x d`` or holds NaN or infinity.
        """
        X = as_rows(X, self.dim)
        if not np.isfinite(X).all():
            raise ConfigError("X must be finite, but it holds NaN or infinity.")
        out = []
        for row in X:
            values: dict[str, Any] = {}
            for codec, cols in self._codecs:
                cond = codec.param.condition
                # `values` holds only active parameters, so a parent found there is active.
                if cond is None or (cond.parent in values and cond.matches(values[cond.parent])):
                    values[codec.param.name] = codec.decode(row[cols])
            out.append(values)
        return out


def as_rows(X: torch.Tensor | np.ndarray, dim: int) -> np.ndarray:
    """``X`` (a tensor, on any device, or an array) as an ``n x dim`` float64 array.

    Raises:
        ConfigError: ``X`` is not ``n x dim``.
    """
    if hasattr(X, "detach"):
        X = X.detach().cpu().numpy()
    rows = np.asarray(X, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != dim:
        raise ConfigError(f"X must be `n x {dim}`, but got shape {tuple(rows.shape)}.")
    return rows
