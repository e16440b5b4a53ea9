"""One model-based proposal: encode the trials, fit the GP, build and optimise the acquisition,
and replace a candidate that repeats a trial or that the space's rule refuses."""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from paretune.search._botorch.acquisition import build_acquisition, feasible
from paretune.search._botorch.candidates import best_distinct, mix
from paretune.search._botorch.duplicates import Avoid, Seen
from paretune.search._botorch.gp import fit_gp
from paretune.search._botorch.known import KnownObjectives
from paretune.search._botorch.local import local_proposal
from paretune.search._botorch.optimize import AcqOptions, optimize
from paretune.search._botorch.problem import Problem
from paretune.search._botorch.subset import fit_subset, near_front


@dataclass(frozen=True)
class ProposalSettings:
    """The sampler's settings that shape a proposal (see :class:`BoTorchSampler`'s args)."""

    options: AcqOptions
    reference: tuple[float, ...] | None
    local_share: float
    local_radius: int
    max_fit_points: int | None = None
    max_baseline_points: int | None = None


def propose(
    problem: Problem,
    settings: ProposalSettings,
    known: KnownObjectives,
    directions: Sequence[StudyDirection],
    complete: Sequence[FrozenTrial],
    constraints: list[list[float]] | None,
    others: Sequence[Seen],
    avoid: Avoid,
    seed: int,
) -> dict[str, Any]:
    """The params of the next trial, from the model of the ``complete`` trials (of at most
    ``settings.max_fit_points`` of them: :func:`~.subset.fit_subset`).

    ``others`` are the study's other trials (those RUNNING are the acquisition's pending
    points); ``avoid`` holds the params no proposal may repeat. Torch's and Python's global
    random states are seeded with ``seed`` and restored afterwards, so the same study and
    seed give the same proposal.
    """
    import torch

    signs = torch.tensor(
        [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in directions],
        dtype=torch.float64,
    )
    n_obj = len(signs)
    modelled = [i for i in range(n_obj) if i not in known]
    X = problem.cube.encode([t.params for t in complete], partial=True)
    Y_obj = torch.tensor([t.values for t in complete], dtype=torch.float64) * signs
    if known:
        known.check(complete)
    # The model's outputs: the objectives that are not known, then the constraints.
    Y = Y_obj[:, modelled]
    C = None
    if constraints is not None:
        C = torch.tensor(constraints, dtype=torch.float64)
        Y = torch.cat([Y, C], dim=-1)
    if settings.max_fit_points is not None and len(complete) > settings.max_fit_points:
        keep = fit_subset(X, Y_obj, feasible(Y_obj, C), settings.max_fit_points)
        index = torch.as_tensor(keep)
        X, Y_obj, Y = X[index], Y_obj[index], Y[index]
        C = None if C is None else C[index]
        complete = [complete[i] for i in keep]
    X_baseline = X
    if settings.max_baseline_points is not None:
        X_baseline = X[
            torch.as_tensor(near_front(Y_obj, feasible(Y_obj, C), settings.max_baseline_points))
        ]
    running = [t for t in others if t.state == TrialState.RUNNING]
    X_pending = None
    if running:
        X_pending = problem.cube.encode([t.params for t in running], partial=True)
    opts = settings.options
    py_state = random.getstate()
    with torch.random.fork_rng(), warnings.catch_warnings():
        torch.manual_seed(seed)
        # optimize_acqf_mixed_alternating subsamples large categoricals with `random`.
        random.seed(seed)
        try:
            quiet_botorch_warnings()
            model = fit_gp(problem, X, Y, fit_maxiter=opts.fit_maxiter)
            acq = build_acquisition(
                model, problem, X_baseline, Y_obj, C, signs, X_pending, seed,
                mc_samples=opts.mc_samples, reference=settings.reference, known=known,
            )  # fmt: skip
            rng = np.random.default_rng(mix(seed, 1))
            X_next = None
            if settings.local_share and rng.random() < settings.local_share:
                X_next = local_proposal(
                    problem, acq, opts, radius=settings.local_radius,
                    reference=settings.reference, complete=complete, X=X, Y_obj=Y_obj, C=C,
                    signs=signs, rng=rng, avoid=avoid,
                )  # fmt: skip
            if X_next is None:
                X_next = optimize(problem, acq, opts)
            params = problem.decode(X_next)
            if avoid.has(params) or not problem.space.admits(params):
                params = best_distinct(problem, acq, seed, avoid=avoid)
        finally:
            random.setstate(py_state)
    return params


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (as it is for ``None``)."""
    import torch

    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def quiet_botorch_warnings() -> None:
    """Ignore, inside the caller's ``warnings.catch_warnings()``, what BoTorch warns on every
    proposal (standardised inputs, optimiser stops, numerical runtime warnings)."""
    from botorch.exceptions.warnings import InputDataWarning, OptimizationWarning

    warnings.simplefilter("ignore", InputDataWarning)
    warnings.simplefilter("ignore", OptimizationWarning)
    warnings.simplefilter("ignore", RuntimeWarning)
