"""A progress bar for a search: trials finished of the budget, the front's size, the ETA."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from paretune.objectives import Metric

__all__ = ["ProgressBar"]


class ProgressBar:
    """Trials finished / budget on a terminal, with the Pareto size (or the best value) beside.

    A multi-objective study shows ``pareto=N``; a single-objective one ``best <metric>=v``.
    The bar is told the current front at each update, so it needs no access to the study.

    Args:
        total: The trial budget (``None``: unknown, the bar counts up without an ETA).
        initial: Trials already finished (a resumed study).
        metrics: The study's metrics.
        front: The Pareto front at the start.
        enabled: ``False`` for no output at all (``--no-progress``).
        file: Where to draw (default: ``sys.stderr``, away from the results on stdout).
    """

    def __init__(
        self,
        *,
        total: int | None,
        initial: int = 0,
        metrics: Sequence[Metric],
        front: Sequence[FrozenTrial] = (),
        enabled: bool = True,
        file: TextIO | None = None,
    ) -> None:
        from tqdm import tqdm

        self._metrics = tuple(metrics)
        self._bar = tqdm(
            total=total,
            initial=initial,
            unit="trial",
            dynamic_ncols=True,
            disable=not enabled,
            file=sys.stderr if file is None else file,
        )
        self._show(front)

    def _show(self, front: Sequence[FrozenTrial]) -> None:
        if len(self._metrics) > 1:
            self._bar.set_postfix_str(f"pareto={len(front)}", refresh=False)
        elif front:
            best = front[0].values[0]
            self._bar.set_postfix_str(f"best {self._metrics[0].name}={best:.5g}", refresh=False)

    def update(self, front: Sequence[FrozenTrial], n: int = 1) -> None:
        """``n`` more trials finished; ``front`` is the Pareto front now (best first)."""
        self._show(front)
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()
