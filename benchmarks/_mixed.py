"""Mixed integer and categorical variants of BoTorch's multi-objective test functions.

A variant takes a BoTorch problem on ``[0, 1]^d`` (``negate=False``: every metric minimised)
and makes some inputs integers: input ``i`` becomes ``Int("x{i}", 0, levels - 1)`` and the
function sees ``k / (levels - 1)``. A categorical ``mode`` may change the function: ``plain``
is the function itself, ``shifted`` moves the distance inputs (all but the first ``m - 1``) by
a quarter, ``(x + 0.25) mod 1``, so that their optimum moves from 0.5 to 0.25 (still on a
9-level grid), and ``scaled`` multiplies every metric by 1.3 (dominated by ``plain``). The
optimum on a grid is not the continuous one, so the maximum hypervolume is unknown: the table
shows the hypervolume from BoTorch's reference point (higher is better).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from paretune.objectives import SyntheticProblem
from paretune.objectives._protocol import Metric
from paretune.spaces import Categorical, Float, Int, SearchSpace

MODES = ("plain", "shifted", "scaled")


class MixedProblem(SyntheticProblem):
    """A BoTorch test function on ``[0, 1]^dim`` with integer inputs and an optional mode.

    Args:
        name: The problem's name in ``mobo.py``.
        botorch_class: The class in ``botorch.test_functions.multi_objective``.
        dim: Number of numeric inputs.
        levels: Input index to its number of integer levels (the rest stay continuous).
        categorical: Add the ``mode`` categorical (``MODES``).
        kwargs: More arguments of the BoTorch class.
    """

    def __init__(
        self,
        name: str,
        botorch_class: str,
        *,
        dim: int,
        levels: Mapping[int, int],
        categorical: bool = False,
        **kwargs: Any,
    ) -> None:
        import torch
        from botorch.test_functions import multi_objective

        self._problem = getattr(multi_objective, botorch_class)(
            dim=dim, negate=False, dtype=torch.float64, **kwargs
        )
        if self._problem.bounds.min() != 0 or self._problem.bounds.max() != 1:
            raise ValueError(f"{botorch_class} is not on the unit cube.")
        self.name = name
        self.dim = dim
        self.levels = dict(levels)
        params: list[Any] = []
        for i in range(dim):
            if i in self.levels:
                params.append(Int(f"x{i}", low=0, high=self.levels[i] - 1))
            else:
                params.append(Float(f"x{i}", low=0.0, high=1.0))
        if categorical:
            params.append(Categorical("mode", choices=MODES))
        self.space = SearchSpace(params)
        self.n_objectives = int(self._problem.num_objectives)
        self.metrics = tuple(Metric(f"f{j}", "minimize") for j in range(self.n_objectives))
        ref = self._problem.ref_point.tolist()
        self.reference_point = {f"f{j}": float(ref[j]) for j in range(self.n_objectives)}
        self.max_hypervolume = None

    def evaluate(self, params: Mapping[str, Any]) -> dict[str, float]:
        return self.evaluate_batch([params])[0]

    def evaluate_batch(self, params_list: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
        import torch

        rows = []
        for params in params_list:
            x = []
            for i in range(self.dim):
                v = float(params[f"x{i}"])
                x.append(v / (self.levels[i] - 1) if i in self.levels else v)
            mode = params.get("mode", "plain")
            if mode == "shifted":
                x = x[: self.n_objectives - 1] + [
                    (v + 0.25) % 1.0 for v in x[self.n_objectives - 1 :]
                ]
            rows.append((x, 1.3 if mode == "scaled" else 1.0))
        X = torch.tensor([x for x, _ in rows], dtype=torch.float64)
        Y = self._problem.evaluate_true(X)
        names = self.metric_names
        return [
            {name: float(v) * scale for name, v in zip(names, y.tolist(), strict=True)}
            for y, (_, scale) in zip(Y, rows, strict=True)
        ]


def mixed_problems() -> dict[str, Any]:
    """Name to factory of the mixed variants (6 to 10 inputs, integers of 5 to 20 levels)."""
    return {
        # The shape of the user's space in issue 23: 8 inputs, half of them 9-level
        # integers, and a categorical that changes the function.
        "DTLZ2-int9-cat": lambda: MixedProblem(
            "DTLZ2-int9-cat", "DTLZ2", dim=8, levels={i: 9 for i in range(4, 8)},
            categorical=True, num_objectives=2,
        ),
        "ZDT1-int5": lambda: MixedProblem(
            "ZDT1-int5", "ZDT1", dim=6, levels={i: 5 for i in range(3, 6)}
        ),
        "DTLZ2-int20": lambda: MixedProblem(
            "DTLZ2-int20", "DTLZ2", dim=7, levels={i: 20 for i in range(3, 7)},
            num_objectives=2,
        ),
        "ZDT3-int12": lambda: MixedProblem(
            "ZDT3-int12", "ZDT3", dim=10, levels={i: 12 for i in range(2, 10)}
        ),
    }  # fmt: skip
