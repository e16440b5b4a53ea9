"""The acquisition: qLogNEHVI for several objectives, qLogNEI for one, and its reference point."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from paretune.search._botorch.kernel import load_fused_kernel

if TYPE_CHECKING:
    import torch
    from botorch.acquisition import AcquisitionFunction
    from botorch.acquisition.multi_objective.objective import MCMultiOutputObjective
    from botorch.models.model import Model

    from paretune.search._botorch.known import KnownObjectives
    from paretune.search._botorch.problem import Problem


def build_acquisition(
    model: Model,
    problem: Problem,
    X_baseline: torch.Tensor,
    Y_obj: torch.Tensor,
    C: torch.Tensor | None,
    signs: torch.Tensor,
    X_pending: torch.Tensor | None,
    seed: int,
    *,
    mc_samples: int,
    reference: Sequence[float] | None,
    known: KnownObjectives,
) -> AcquisitionFunction:
    """The acquisition of one proposal.

    Args:
        model: The GP; its outputs are the modelled objectives, then the constraints.
        problem: The space as BoTorch sees it.
        X_baseline: The observed points whose uncertain values the improvement is measured
            from (``b x dim``): all of the model's, or those nearest the front
            (``max_baseline_points``).
        Y_obj: Every objective at the model's points, signed so that larger is better
            (``n x objectives``); the reference point is inferred from them.
        C: The constraint values there (``n x constraints``, ``<= 0`` feasible), or None.
        signs: ``+1`` per maximised, ``-1`` per minimised objective.
        X_pending: Points of trials still running (``p x dim``), or None.
        seed: The seed of the quasi-MC samples.
        mc_samples: How many quasi-MC samples.
        reference: The user's reference point (own units and directions), or None to infer it.
        known: The objectives computed from the params instead of modelled.
    """
    import torch
    from botorch.acquisition.logei import qLogNoisyExpectedImprovement
    from botorch.acquisition.multi_objective.logei import (
        qLogNoisyExpectedHypervolumeImprovement,
    )
    from botorch.acquisition.multi_objective.objective import IdentityMCMultiOutputObjective
    from botorch.acquisition.objective import GenericMCObjective
    from botorch.sampling.normal import SobolQMCNormalSampler

    n_obj = Y_obj.shape[-1]
    n_con = 0 if C is None else C.shape[-1]
    n_modelled = n_obj - len(known)
    sampler = SobolQMCNormalSampler(torch.Size([mc_samples]), seed=seed)
    constraints: list[Callable[[torch.Tensor], torch.Tensor]] | None = [
        Column(n_modelled + i) for i in range(n_con)
    ] or None
    if n_obj == 1:
        return qLogNoisyExpectedImprovement(
            model=model,
            X_baseline=X_baseline,
            sampler=sampler,
            objective=GenericMCObjective(Column(0)) if n_con else None,
            constraints=constraints,
            X_pending=X_pending,
            prune_baseline=True,
        )
    ref = reference_point(reference, Y_obj, C, signs)
    objective: MCMultiOutputObjective | None = None
    if known:
        objective = known.objective(problem, signs, ref)
    elif n_con:
        objective = IdentityMCMultiOutputObjective(outcomes=list(range(n_obj)))
    load_fused_kernel()
    return qLogNoisyExpectedHypervolumeImprovement(
        model=model,
        ref_point=ref.tolist(),
        X_baseline=X_baseline,
        sampler=sampler,
        objective=objective,
        constraints=constraints,
        X_pending=X_pending,
        prune_baseline=True,
    )


def reference_point(
    reference: Sequence[float] | None,
    Y_obj: torch.Tensor,
    C: torch.Tensor | None,
    signs: torch.Tensor,
) -> torch.Tensor:
    """The hypervolume reference point, signed like ``Y_obj``: the user's ``reference``, else
    BoTorch's ``infer_reference_point`` on the feasible observed Pareto front (on all points
    when none is feasible)."""
    import torch
    from botorch.utils.multi_objective.hypervolume import infer_reference_point
    from botorch.utils.multi_objective.pareto import is_non_dominated

    if reference is not None:
        return torch.tensor(reference, dtype=torch.float64) * signs
    ok = feasible(Y_obj, C)
    pool = Y_obj[ok] if ok.any() else Y_obj
    return infer_reference_point(pool[is_non_dominated(pool)])


def feasible(Y_obj: torch.Tensor, C: torch.Tensor | None) -> torch.Tensor:
    """Rows that meet every outcome constraint (all rows without constraints)."""
    import torch

    if C is None:
        return torch.ones(len(Y_obj), dtype=torch.bool)
    return (C <= 0).all(dim=-1)


class Column:
    """``Z[..., i]``: one output of the model's samples (picklable, unlike a lambda)."""

    def __init__(self, i: int) -> None:
        self.i = i

    def __call__(self, Z: torch.Tensor, X: torch.Tensor | None = None) -> torch.Tensor:
        return Z[..., self.i]
