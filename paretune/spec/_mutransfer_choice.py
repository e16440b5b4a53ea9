"""How the muTransfer workflow picks hyperparameters from the proxies' runs: pure functions of
loss tables, so the rules are tested without training anything.

A table maps a width to its points (a hyperparameter setting, as sorted ``(name, value)``
pairs) and each point to the validation losses of its seeds; ``inf`` is a run that diverged.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

__all__ = ["Table", "best_point", "mean_loss", "regret_choice", "stderr"]

P = TypeVar("P", bound=Hashable)
Table = Mapping[int, Mapping[P, Sequence[float]]]


def mean_loss(losses: Sequence[float]) -> float:
    """The mean over seeds; ``inf`` when a seed diverged (a point is only as good as its worst
    seed's stability)."""
    if not losses or any(not math.isfinite(x) for x in losses):
        return math.inf
    return sum(losses) / len(losses)


def stderr(losses: Sequence[float]) -> float:
    """The standard error of the mean over seeds; NaN with one seed or a diverged one."""
    if len(losses) < 2 or any(not math.isfinite(x) for x in losses):
        return math.nan
    mean = sum(losses) / len(losses)
    variance = sum((x - mean) ** 2 for x in losses) / (len(losses) - 1)
    return math.sqrt(variance / len(losses))


def best_point(points: Mapping[P, Sequence[float]]) -> P | None:
    """The point of the lowest finite mean loss (ties: the smaller point), or ``None`` when
    every point diverged."""
    finite = [p for p in points if math.isfinite(mean_loss(points[p]))]
    if not finite:
        return None
    return min(finite, key=lambda p: (mean_loss(points[p]), p))


def regret_choice(table: Table[P], widths: Sequence[int]) -> P | None:
    """The point every width ran whose summed regret is least: each width's mean loss there
    over that width's best mean loss, added over ``widths``.

    Regret rather than raw loss, so that the widest proxy (lowest losses) does not outvote
    the others. Widths whose points all diverged are left out; a point that diverged at any
    counted width is never chosen. ``None`` when no point is left.
    """
    counted = [w for w in widths if best_point(table.get(w, {})) is not None]
    if not counted:
        return None
    common = set.intersection(*(set(table[w]) for w in counted))
    best = {w: mean_loss(table[w][best_point(table[w])]) for w in counted}  # type: ignore[index]
    regret = {p: sum(mean_loss(table[w][p]) - best[w] for w in counted) for p in common}
    finite = [p for p in common if math.isfinite(regret[p])]
    if not finite:
        return None
    return min(finite, key=lambda p: (regret[p], p))
