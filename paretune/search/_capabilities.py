"""What a controller promises, declared by the controller (its class) and read by the registry."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Capabilities"]


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What a controller promises. :class:`paretune.testing.ControllerConformance` tests
    ``multi_objective``, ``constraints``, ``conditional`` and ``no_duplicates`` where declared;
    ``keyed_by_trial`` decides how a resumed search seeds it.

    A sampler class declares its own as the class attribute ``capabilities`` (as
    :class:`~paretune.search.BoTorchSampler` does), and :func:`register_controller` reads it.

    Attributes:
        multi_objective: Proposes for studies with two or more objectives.
        constraints: Takes ``constraints_func`` and prefers feasible candidates.
        conditional: Handles conditional parameters (absent when their condition fails).
        pending: Sees RUNNING trials (other workers) and proposes away from them.
        no_duplicates: Never proposes the parameters of an existing trial, in any state.
        keyed_by_trial: Its randomness is keyed by (seed, trial number), so a resumed search
            keeps the seed; otherwise the seed is offset by the number of existing trials so a
            resumed search does not replay its first draws.
    """

    multi_objective: bool = True
    constraints: bool = False
    conditional: bool = True
    pending: bool = False
    no_duplicates: bool = False
    keyed_by_trial: bool = False
