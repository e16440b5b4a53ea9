"""Known objectives: computed exactly from the params at every scored candidate, not modelled."""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial

from paretune._errors import ConfigError, describe
from paretune.search._botorch.duplicates import params_key

if TYPE_CHECKING:
    import torch
    from botorch.acquisition.multi_objective.objective import MCMultiOutputObjective

    from paretune.search._botorch.problem import Problem

# The package's logger, whichever of its modules logs.
_log = logging.getLogger(__package__)

# Known-objective values kept across proposals (then dropped and recomputed).
KNOWN_CACHE_SIZE = 100_000


class KnownObjectives:
    """The sampler's ``known_objectives``: objective position to ``f(params) -> float``, in
    the objective's own units; empty (and false) when there are none.

    Their values are cached across proposals (completed trials are scored at every
    acquisition call), and each completed trial is compared once with the functions.

    Raises:
        ConfigError: ``functions`` is not a mapping of ints ``>= 0`` to callables.
    """

    def __init__(self, functions: Mapping[int, Callable[[dict[str, Any]], float]] | None) -> None:
        self.functions: dict[int, Callable[[dict[str, Any]], float]] = {}
        if functions is not None:
            if not isinstance(functions, Mapping) or not all(
                isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0
                and callable(f)
                for i, f in functions.items()
            ):  # fmt: skip
                raise ConfigError(
                    "`known_objectives` must map objective positions (ints >= 0) to functions "
                    f"of the params, but got {describe(functions)}."
                )
            self.functions = {int(i): f for i, f in functions.items()}
        # Signed known values (None: refused by the space's rule) by params key.
        self._cache: dict[tuple[Any, ...], tuple[float, ...] | None] = {}
        self._mismatch_logged = False
        # Trials already compared with the functions: (id, start), ids repeat across storages.
        self._checked: set[tuple[int, Any]] = set()

    def __len__(self) -> int:
        return len(self.functions)

    def __contains__(self, position: object) -> bool:
        return position in self.functions

    def check_study(self, n_obj: int) -> None:
        """Raise ConfigError unless the positions fit a study of ``n_obj`` objectives and
        leave at least one to model."""
        known = self.functions
        if known and (max(known) >= n_obj or len(known) == n_obj):
            raise ConfigError(
                f"`known_objectives` names positions {sorted(known)} but the study has "
                f"{n_obj} objectives; give positions below {n_obj} and leave at least one "
                "objective to model."
            )

    def check(self, complete: Sequence[FrozenTrial]) -> None:
        """Log once when a function disagrees with a trial's value (each trial is compared
        once, not at every proposal)."""
        if self._mismatch_logged:
            return
        for t in complete:
            key = (t._trial_id, t.datetime_start)
            if key in self._checked:
                continue
            self._checked.add(key)
            assert t.values is not None
            for i, f in self.functions.items():
                value = float(f(dict(t.params)))
                if not math.isclose(value, t.values[i], rel_tol=1e-6, abs_tol=1e-9):
                    _log.warning(
                        "BoTorchSampler: known objective %d gives %r for the params of trial "
                        "%d, which reported %r; the proposals use the function's values.",
                        i,
                        value,
                        t.number,
                        t.values[i],
                    )
                    self._mismatch_logged = True
                    return

    def objective(
        self, problem: Problem, signs: torch.Tensor, ref: torch.Tensor
    ) -> MCMultiOutputObjective:
        """The acquisition's objectives: the model's samples and the known objectives, as a
        BoTorch ``MCMultiOutputObjective`` (``objectives x`` maximised).

        ``forward(samples, X)``: the modelled objectives come from ``samples`` (``... x q x
        m``; the constraint outputs after them are BoTorch's business), the known ones are
        computed at the params each row of ``X`` snaps to (as a proposal would) and broadcast
        over the MC samples. Rows the space's rule refuses get a value far below the
        reference point ``ref``, so they add no hypervolume. Known values carry no gradient:
        they depend on the discrete columns, which the mixed optimiser moves by enumeration.
        """
        import torch
        from botorch.acquisition.multi_objective.objective import MCMultiOutputObjective

        n_obj = len(signs)
        functions = self.functions
        known = sorted(functions)
        modelled = [i for i in range(n_obj) if i not in functions]
        # Far below the reference point (objectives are maximised here): no hypervolume.
        refused = tuple(float(ref[i] - 1e3 * (1.0 + abs(ref[i]))) for i in known)
        cache = self._cache

        def values_at(X: torch.Tensor) -> torch.Tensor:
            flat = X.detach().reshape(-1, X.shape[-1])
            rows, inverse = torch.unique(flat, dim=0, return_inverse=True)
            out = []
            for params in problem.cube.decode(rows):
                key = params_key(problem.space, params)
                if key not in cache:
                    if len(cache) >= KNOWN_CACHE_SIZE:
                        cache.clear()
                    cache[key] = (
                        tuple(float(signs[i]) * float(functions[i](params)) for i in known)
                        if problem.space.admits(params)
                        else None
                    )
                value = cache[key]
                out.append(refused if value is None else value)
            table = torch.tensor(out, dtype=X.dtype, device=X.device)
            return table[inverse].reshape(*X.shape[:-1], len(known))

        # Objective i's column in cat([modelled samples, known values]).
        order = torch.tensor([(modelled + known).index(i) for i in range(n_obj)])

        class WithKnown(MCMultiOutputObjective):
            def forward(self, samples: torch.Tensor, X: torch.Tensor | None = None) -> torch.Tensor:
                if X is None:
                    raise ValueError("known objectives need the candidates X")
                fixed = values_at(X).expand(*samples.shape[:-1], len(known))
                both = torch.cat([samples[..., : len(modelled)], fixed], dim=-1)
                return both[..., order]

        return WithKnown()
