"""Candidates without a model: the Sobol start-up, random fallbacks, and the best new point of
a Sobol batch when the optimiser's proposal repeats a trial."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from paretune.search._botorch.duplicates import Avoid

if TYPE_CHECKING:
    import torch
    from botorch.acquisition import AcquisitionFunction

    from paretune.search._botorch.problem import Problem


def mix(*keys: int) -> int:
    """A 32-bit seed from several integers (independent streams per trial)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def sobol_unit(problem: Problem, n: int, *, skip: int, seed: int) -> torch.Tensor:
    """Points ``skip`` to ``skip + n - 1`` of the scrambled Sobol sequence of ``seed``
    (``n x dim`` cube points)."""
    import torch
    from torch.quasirandom import SobolEngine

    engine = SobolEngine(problem.dim, scramble=True, seed=seed % (2**31))
    if skip:
        engine.fast_forward(skip)
    return engine.draw(n, dtype=torch.float64)


def sobol(problem: Problem, number: int, *, seed: int, avoid: Avoid) -> dict[str, Any]:
    """Point ``number`` of the seeded Sobol sequence, or a random new point if it exists."""
    params = problem.decode(sobol_unit(problem, 1, skip=number, seed=seed))
    if problem.dim == 0 or (not avoid.has(params) and problem.space.admits(params)):
        return params
    return random_new(problem, mix(seed, number), avoid=avoid)


def random_new(problem: Problem, seed: int, *, avoid: Avoid) -> dict[str, Any]:
    """A uniform random point that no trial has and the space's rule admits (the last
    draw if 100 draws all fail that)."""
    rng = np.random.default_rng(seed)
    params = problem.space.sample(rng)
    for _ in range(100):
        if not avoid.has(params) and problem.space.admits(params):
            break
        params = problem.space.sample(rng)
    return params


def best_distinct(
    problem: Problem, acq: AcquisitionFunction, seed: int, *, avoid: Avoid
) -> dict[str, Any]:
    """The best new point the space's rule admits among 256 Sobol points, scored where
    they decode to.

    Raw Sobol points sit between grid values and categories; the acquisition is evaluated
    at the valid points they snap to, so the choice is among what would be proposed.
    """
    import torch

    candidates: list[dict[str, Any]] = []
    seen = Avoid(problem.space, (), exact=problem.exact)
    for row in sobol_unit(problem, 256, skip=0, seed=seed):
        params = problem.decode(row.unsqueeze(0))
        if not avoid.has(params) and not seen.has(params) and problem.space.admits(params):
            seen.add(params)
            candidates.append(params)
    if not candidates:
        return random_new(problem, seed, avoid=avoid)
    X = problem.cube.encode(candidates, partial=True)
    with torch.no_grad():
        values = torch.cat([acq(x.unsqueeze(1)) for x in X.split(64)])
    return candidates[int(torch.argmax(values))]
