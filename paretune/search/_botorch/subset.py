"""The trials a proposal's model is fitted to when the study has grown past ``max_fit_points``.

An exact GP costs ``O(n^3)`` per step of its fit and qLogNEHVI's baseline grows with ``n``, so
a proposal at 500 trials took several times one at 100. Past the cap the model sees a subset
that keeps what the acquisition needs: the observed Pareto front (where the hypervolume is
improved) and the layers behind it, the latest trials (where the search is now), and a
space-filling sample of the rest (so that the model still knows the regions it has left).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# Shares of the cap: Pareto layers (the front first) up to FRONT_SHARE, the latest trials up
# to RECENT_SHARE, the rest by farthest-point sampling in the unit cube.
FRONT_SHARE = 0.5
RECENT_SHARE = 0.2


def fit_subset(
    X: torch.Tensor, Y_obj: torch.Tensor, feasible: torch.Tensor, cap: int
) -> np.ndarray:
    """The sorted row indices (at most ``cap``) of the points the model is fitted to.

    Args:
        X: The observed points in the unit cube (``n x dim``), in trial order.
        Y_obj: Their objectives, larger is better (``n x objectives``).
        feasible: Rows that meet every constraint (``n``, bool).
        cap: The most points to keep.

    Returns:
        All ``n`` indices when ``n <= cap``. Otherwise ``cap`` indices: the feasible Pareto
        front whole (when it has more than ``cap`` points, a spread of it: farthest-point
        sampling in objective space), the following Pareto layers of the feasible points while
        they fit in ``FRONT_SHARE`` of the cap, the latest trials up to ``RECENT_SHARE``, and
        farthest-point samples in the cube of the rest. Deterministic: the same trials give
        the same subset.
    """
    n = X.shape[0]
    if n <= cap:
        return np.arange(n)
    x = X.detach().cpu().numpy()
    y = Y_obj.detach().cpu().numpy()
    ok = feasible.detach().cpu().numpy().astype(bool)
    chosen = np.zeros(n, dtype=bool)
    # Infeasible points come after every feasible one: as a last layer of their own.
    layers = pareto_layers(y[ok])
    feasible_index = np.flatnonzero(ok)
    for depth, layer in enumerate(layers):
        members = feasible_index[layer]
        if depth == 0 and len(members) > cap:
            picked = farthest_points(_unit_scale(y[members]), cap, start=np.zeros(0, dtype=int))
            chosen[members[picked]] = True
            return np.flatnonzero(chosen)
        if depth > 0 and chosen.sum() + len(members) > FRONT_SHARE * cap:
            break
        chosen[members] = True
    recent = int(RECENT_SHARE * cap)
    for i in range(n - 1, -1, -1):
        if recent <= 0 or chosen.sum() >= cap:
            break
        if not chosen[i]:
            chosen[i] = True
            recent -= 1
    room = cap - int(chosen.sum())
    if room > 0:
        picked = farthest_points(x, room, start=np.flatnonzero(chosen))
        chosen[picked] = True
    return np.flatnonzero(chosen)


def near_front(Y_obj: torch.Tensor, feasible: torch.Tensor, cap: int) -> np.ndarray:
    """The sorted row indices (at most ``cap``) of the points nearest the observed front: the
    feasible Pareto layers in order, the last one that does not fit whole (the front, if it
    alone does not) spread by farthest-point sampling in objective space; every row when
    there are at most ``cap``, or when no row is feasible."""
    n = Y_obj.shape[0]
    ok = feasible.detach().cpu().numpy().astype(bool)
    if n <= cap or not ok.any():
        return np.arange(n)
    y = Y_obj.detach().cpu().numpy()
    index = np.flatnonzero(ok)
    chosen: list[np.ndarray] = []
    room = cap
    for layer in pareto_layers(y[ok]):
        members = index[layer]
        if len(members) >= room:
            picked = farthest_points(_unit_scale(y[members]), room, start=np.zeros(0, dtype=int))
            chosen.append(members[picked])
            break
        chosen.append(members)
        room -= len(members)
    return np.sort(np.concatenate(chosen))


def pareto_layers(y: np.ndarray) -> Iterator[np.ndarray]:
    """Non-dominated sorting of ``y`` (``n x m``, larger is better): the row indices of each
    Pareto layer, the front first, computed as they are asked for."""
    remaining = np.arange(len(y))
    while len(remaining):
        sub = y[remaining]
        # Row i is dominated when some row is >= everywhere and > somewhere.
        ge = np.all(sub[None, :, :] >= sub[:, None, :], axis=-1)
        gt = np.any(sub[None, :, :] > sub[:, None, :], axis=-1)
        dominated = np.any(ge & gt, axis=1)
        yield remaining[~dominated]
        remaining = remaining[dominated]


def farthest_points(points: np.ndarray, k: int, *, start: np.ndarray) -> np.ndarray:
    """``k`` indices of ``points`` not in ``start``, each the farthest (Euclidean) from those
    chosen before it (``start`` included); the first is the farthest from ``start``, or row 0
    when ``start`` is empty."""
    n = len(points)
    free = np.ones(n, dtype=bool)
    free[start] = False
    k = min(k, int(free.sum()))
    if k <= 0:
        return np.zeros(0, dtype=int)
    if len(start):
        d = np.min(((points[:, None, :] - points[None, start, :]) ** 2).sum(-1), axis=1)
    else:
        d = np.full(n, np.inf)
    out = []
    for _ in range(k):
        d_free = np.where(free, d, -1.0)
        i = int(np.argmax(d_free))
        out.append(i)
        free[i] = False
        d = np.minimum(d, ((points - points[i]) ** 2).sum(-1))
    return np.asarray(out, dtype=int)


def _unit_scale(y: np.ndarray) -> np.ndarray:
    span = y.max(0) - y.min(0)
    return (y - y.min(0)) / np.where(span > 0, span, 1.0)
