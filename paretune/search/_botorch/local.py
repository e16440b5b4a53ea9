"""Local proposals: the acquisition optimised near one observed Pareto-optimal trial.

A global GP fitted to few points in many dimensions is least reliable far from the data,
where the acquisition tends to send it (the corners of the box); a local proposal frees a few
columns of a front trial and holds the rest, refining the front where it is known, as the
trust regions of TuRBO and MORBO do.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from optuna.trial import FrozenTrial

from paretune.search._botorch.acquisition import feasible, reference_point
from paretune.search._botorch.optimize import AcqOptions, optimize

if TYPE_CHECKING:
    import torch
    from botorch.acquisition import AcquisitionFunction

    from paretune.search._botorch.duplicates import Avoid
    from paretune.search._botorch.problem import Problem

# The package's logger, whichever of its modules logs.
_log = logging.getLogger(__package__)


def local_proposal(
    problem: Problem,
    acq: AcquisitionFunction,
    opts: AcqOptions,
    *,
    radius: int,
    reference: Sequence[float] | None,
    complete: Sequence[FrozenTrial],
    X: torch.Tensor,
    Y_obj: torch.Tensor,
    C: torch.Tensor | None,
    signs: torch.Tensor,
    rng: np.random.Generator,
    avoid: Avoid,
) -> torch.Tensor | None:
    """The acquisition's best point within ``radius`` columns of a Pareto-optimal trial
    (``1 x dim``); None when there is no such trial or three draws of columns found nothing
    new that the space's rule admits."""
    centres = front_rows(reference, Y_obj, C, signs)
    if not centres or problem.dim == 0:
        return None
    k = min(radius, problem.dim)
    for _ in range(3):
        row = centres[int(rng.integers(len(centres)))]
        free = {int(j) for j in rng.choice(problem.dim, size=k, replace=False)}
        fixed = {j: float(X[row, j]) for j in range(problem.dim) if j not in free}
        X_next = optimize(problem, acq, opts, fixed=fixed)
        params = problem.decode(X_next)
        if not avoid.has(params) and problem.space.admits(params):
            _log.debug(
                "BoTorchSampler: local proposal near trial %d (columns %s)",
                complete[row].number,
                sorted(free),
            )
            return X_next
    return None


def front_rows(
    reference: Sequence[float] | None,
    Y_obj: torch.Tensor,
    C: torch.Tensor | None,
    signs: torch.Tensor,
) -> list[int]:
    """Rows of the feasible observed Pareto front that beat the reference point."""
    from botorch.utils.multi_objective.pareto import is_non_dominated

    keep = feasible(Y_obj, C)
    if Y_obj.shape[-1] > 1:
        keep &= (Y_obj > reference_point(reference, Y_obj, C, signs)).all(dim=-1)
    rows = keep.nonzero().squeeze(-1)
    if len(rows) == 0:
        return []
    front = is_non_dominated(Y_obj[rows])
    return [int(r) for r in rows[front]]
