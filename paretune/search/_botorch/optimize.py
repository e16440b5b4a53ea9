"""The acquisition optimiser: its budgets, and one call of BoTorch's optimiser per proposal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from botorch.acquisition import AcquisitionFunction

    from paretune.search._botorch.problem import Problem


@dataclass(frozen=True)
class AcqOptions:
    """The budgets of a proposal (the sampler's ``num_restarts``, ... arguments)."""

    num_restarts: int
    raw_samples: int
    mc_samples: int
    maxiter: int
    fit_maxiter: int


# fit_maxiter: L-BFGS steps per GP fit. At 200 the fit took half of a DTLZ2 proposal at 35
# trials, one output's lengthscale drifting along a flat likelihood ridge; 100 cut the median
# proposal at trials 31-40 from 2.5 s to 1.4 s, with no loss over 5 seeds (benchmarks/README.md).
DEFAULT = AcqOptions(num_restarts=6, raw_samples=256, mc_samples=64, maxiter=100, fit_maxiter=100)
FAST = AcqOptions(num_restarts=2, raw_samples=64, mc_samples=32, maxiter=20, fit_maxiter=50)

# Mixed spaces: perturbations of each baseline point among the restarts' candidates
# (BoTorch's `get_spray_points`: Gaussian steps of 0.1 on continuous columns, one level on
# integer ones, another choice on categorical ones).
SPRAY_POINTS = 20

# Raw samples scored per acquisition call when choosing the restarts' starting points.
INIT_BATCH_LIMIT = 1024


def optimize(
    problem: Problem,
    acq: AcquisitionFunction,
    opts: AcqOptions,
    *,
    fixed: dict[int, float] | None = None,
) -> torch.Tensor:
    """The acquisition's best point (``1 x dim``), columns in ``fixed`` held there.

    ``optimize_acqf`` on continuous spaces; ``optimize_acqf_mixed_alternating`` when the
    problem has discrete or categorical columns (``maxiter // 8``, at least 4, alternating
    steps).
    """
    from botorch.optim import optimize_acqf, optimize_acqf_mixed_alternating

    if problem.discrete or problem.categorical:
        X, _ = optimize_acqf_mixed_alternating(
            acq,
            bounds=problem.cube.bounds,
            discrete_dims=problem.discrete or None,
            cat_dims=problem.categorical or None,
            q=1,
            num_restarts=opts.num_restarts,
            raw_samples=opts.raw_samples,
            fixed_features=fixed or None,
            options={
                "maxiter_alternating": max(4, opts.maxiter // 8),
                # Starting points around the baseline (the observed points nearest the front),
                # as `sample_around_best` gives the continuous path. Without them BoTorch
                # starts a space with integer columns only from the optimum of the continuous
                # relaxation, which sits on the box's bounds: on DTLZ2 with 9-level integers
                # and a categorical (issue 23) most model proposals were corners.
                "num_spray_points": SPRAY_POINTS,
            },
        )
        return X
    X, _ = optimize_acqf(
        acq,
        bounds=problem.cube.bounds,
        q=1,
        num_restarts=opts.num_restarts,
        raw_samples=opts.raw_samples,
        fixed_features=fixed or None,
        options={
            "maxiter": opts.maxiter,
            "batch_limit": opts.num_restarts,
            # The raw samples in one batch: scored 6 at a time (batch_limit) they took
            # two thirds of a proposal in ~90 small posterior calls (DTLZ2, 35 trials).
            "init_batch_limit": INIT_BATCH_LIMIT,
            "sample_around_best": True,
        },
    )
    return X
