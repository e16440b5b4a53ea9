"""Pareto fronts and hypervolumes of metric tables.

Everything here works on plain ``numpy`` arrays of shape ``n x m`` (one row per trial, one column
per metric) so that the study, the dashboards and the benchmarks can share it without importing
torch. :func:`hypervolume` is exact: a sweep in two dimensions, an incremental staircase in three
and slicing along the last objective (HSO) above that, which is fast enough for a few hundred
points and up to four or five objectives.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import numpy as np

from paretune._errors import ConfigError

__all__ = ["dominates", "hypervolume", "log10_hv_difference", "pareto_mask"]


def pareto_mask(
    values: np.ndarray,
    directions: Sequence[str],
    *,
    tolerance: Sequence[float] | None = None,
) -> np.ndarray:
    """Which rows of a metric table no row dominates (by at least ``tolerance``).

    Row ``a`` dominates row ``b`` when ``a`` is at least as good as ``b`` in every metric and
    strictly better in one. Exact duplicates do not dominate each other, so every copy of a
    non-dominated row is kept. Rows containing NaN are never non-dominated and dominate nothing.

    With ``tolerance`` (one non-negative margin per column, in the column's units), a row is
    dropped only when another row is better than it by at least the margin in every metric (and
    strictly better in one): the rows a noisy measurement cannot rule out, for instance every
    trial whose accuracy is within one standard error of the front's (additive epsilon
    dominance). All-zero margins give the plain front.

    Args:
        values: `n x m` metric values.
        directions: ``"minimize"`` or ``"maximize"`` for each of the ``m`` columns.
        tolerance: Margins, one per column; ``None`` for none.

    Returns:
        A boolean array of length ``n``, ``True`` for the non-dominated rows.

    Raises:
        ConfigError: ``values`` is not two-dimensional, ``directions`` or ``tolerance`` does
            not match it, or a margin is negative or not finite.
    """
    signs = _signs(directions)
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != len(signs):
        raise ConfigError(
            f"`values` must be an n x {len(signs)} array (one column per direction), but got "
            f"shape {arr.shape}."
        )
    margins = _margins(tolerance, len(signs))
    n = arr.shape[0]
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    finite = ~np.isnan(arr).any(axis=1)
    idx = np.flatnonzero(finite)
    mins = arr[idx] * signs  # every column is now minimised
    if mins.shape[1] <= 2 and not margins.any():
        mask[idx[_non_dominated_2d(mins)]] = True
        return mask
    keep = np.ones(len(idx), dtype=bool)
    # Chunks bound the n x n x m comparison tensor to a few MB.
    chunk = max(1, 2_000_000 // max(1, len(idx) * mins.shape[1]))
    for start in range(0, len(idx), chunk):
        rows = mins[start : start + chunk, None, :]
        weakly_better = (mins[None, :, :] <= rows - margins).all(axis=2)
        strictly_better = (mins[None, :, :] < rows).any(axis=2)
        keep[start : start + chunk] = ~(weakly_better & strictly_better).any(axis=1)
    mask[idx[keep]] = True
    return mask


def dominates(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    directions: Sequence[str],
    *,
    tolerance: Sequence[float] | None = None,
) -> bool:
    """Whether the metric row ``a`` dominates the row ``b`` (by at least ``tolerance``).

    The pairwise test behind :func:`pareto_mask`: ``a`` is at least as good as ``b`` in every
    metric (better by at least the margin, with ``tolerance``) and strictly better in one. A
    row with NaN neither dominates nor is dominated, so a metric that was never measured
    decides nothing. For every row ``i`` without NaN, ``pareto_mask(values, directions)[i]``
    is ``not any(dominates(v, values[i], directions) for v in values)``.

    Args:
        a: `m` metric values.
        b: `m` metric values, in the same order.
        directions: ``"minimize"`` or ``"maximize"`` for each of the ``m`` metrics.
        tolerance: Margins, one per metric, in the metric's units; ``None`` for none.

    Returns:
        ``True`` if ``a`` dominates ``b``.

    Raises:
        ConfigError: ``a``, ``b`` and ``directions`` differ in length, or a margin is negative
            or not finite.
    """
    signs = _signs(directions)
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != signs.shape or y.shape != signs.shape:
        raise ConfigError(
            f"both rows must have {len(signs)} values (one per direction), but got "
            f"{x.shape[0]} and {y.shape[0]}."
        )
    margins = _margins(tolerance, len(signs))
    if np.isnan(x).any() or np.isnan(y).any():
        return False
    x, y = x * signs, y * signs  # every metric is now minimised
    return bool((x <= y - margins).all() and (x < y).any())


def hypervolume(points: np.ndarray, reference_point: np.ndarray) -> float:
    """The exact hypervolume dominated by ``points`` and bounded by ``reference_point``.

    Every column is minimised. A point contributes only if it is strictly better than the
    reference point in every coordinate; dominated points and duplicates are allowed and add
    nothing; rows with NaN are skipped, and a coordinate of ``-inf`` makes the volume infinite.
    To use a table with maximised columns, negate those columns and the matching reference
    coordinates first.

    Args:
        points: `n x m` objective values (``n`` may be 0).
        reference_point: `m` coordinates, worse than every point that should count.

    Returns:
        The Lebesgue measure of ``{y : p <= y < reference_point for some point p}``.

    Raises:
        ConfigError: The shapes do not match or the reference point is not finite.
    """
    ref = np.asarray(reference_point, dtype=np.float64).reshape(-1)
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return 0.0
    if arr.ndim != 2 or arr.shape[1] != ref.shape[0]:
        raise ConfigError(
            f"`points` must be an n x {ref.shape[0]} array to match the reference point, but "
            f"got shape {arr.shape}."
        )
    if not np.isfinite(ref).all():
        raise ConfigError(f"the reference point must be finite, but got {ref.tolist()}.")
    arr = arr[(arr < ref).all(axis=1)]  # NaN rows fail the comparison and drop out
    if arr.shape[0] == 0:
        return 0.0
    if np.isneginf(arr).any():
        return math.inf
    m = ref.shape[0]
    if m == 1:
        return float(ref[0] - arr[:, 0].min())
    if arr.shape[0] > 1 and m > 2:
        arr = arr[pareto_mask(arr, ["minimize"] * m)]
    return float(_hv(arr, ref))


def log10_hv_difference(hv: float, max_hv: float, *, floor: float = 1e-12) -> float:
    """``log10(max_hv - hv)``: the usual convergence measure of a multi-objective optimiser.

    Args:
        hv: The hypervolume reached.
        max_hv: The hypervolume of the true Pareto front (same reference point).
        floor: The smallest difference reported. A difference below it (including a negative
            one, which happens when ``max_hv`` is itself an estimate) is reported as ``floor``
            so that plots stay finite.

    Returns:
        ``log10(max(max_hv - hv, floor))``.

    Raises:
        ConfigError: An argument is not finite or ``floor`` is not positive.
    """
    if not (math.isfinite(hv) and math.isfinite(max_hv)):
        raise ConfigError(f"hypervolumes must be finite, but got hv={hv!r}, max_hv={max_hv!r}.")
    if not floor > 0:
        raise ConfigError(f"`floor > 0` must hold, but got floor={floor!r}.")
    return math.log10(max(max_hv - hv, floor))


def _margins(tolerance: Sequence[float] | None, m: int) -> np.ndarray:
    if tolerance is None:
        return np.zeros(m, dtype=np.float64)
    margins = np.asarray(tolerance, dtype=np.float64)
    if margins.shape != (m,):
        raise ConfigError(
            f"`tolerance` must have one margin per column ({m}), but got {list(tolerance)!r}."
        )
    if not (np.isfinite(margins) & (margins >= 0)).all():
        raise ConfigError(
            f"every tolerance margin must be finite and >= 0, but got {list(tolerance)!r}."
        )
    return margins


def _signs(directions: Sequence[str]) -> np.ndarray:
    if isinstance(directions, str):
        raise ConfigError(
            f"`directions` must be a sequence of 'minimize'/'maximize', one per column, but got "
            f"the string {directions!r}."
        )
    signs = []
    for i, direction in enumerate(directions):
        if direction == "minimize":
            signs.append(1.0)
        elif direction == "maximize":
            signs.append(-1.0)
        else:
            raise ConfigError(
                f"each direction must be 'minimize' or 'maximize', but got {direction!r}.",
                path=("directions", i),
            )
    return np.asarray(signs, dtype=np.float64)


def _non_dominated_2d(values: np.ndarray) -> np.ndarray:
    """Non-dominated rows of an `n x 1` or `n x 2` minimisation table, in O(n log n)."""
    if values.shape[1] == 1:
        return values[:, 0] == values[:, 0].min()
    x, y = values[:, 0], values[:, 1]
    order = np.lexsort((y, x))
    xs, ys = x[order], y[order]
    # Group equal x; within a group the first (sorted) y is the group's minimum.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    group = np.cumsum(np.r_[True, xs[1:] != xs[:-1]]) - 1
    group_min = ys[starts]
    # The best y among strictly smaller x: a point is dominated if it is not better than that,
    # or if its own group has a smaller y.
    before = np.r_[np.inf, np.minimum.accumulate(group_min)[:-1]]
    dominated = ((group > 0) & (before[group] <= ys)) | (ys > group_min[group])
    keep_sorted = ~dominated
    keep = np.empty_like(keep_sorted)
    keep[order] = keep_sorted
    return keep


def _hv(points: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of points that are all strictly inside the reference box."""
    m = ref.shape[0]
    if m == 2:
        return _hv2(points, ref)
    if m == 3:
        return _hv3(points, ref)
    # Slice along the last objective: between consecutive values z_i < z_{i+1} the cross
    # section is the (m-1)-dimensional hypervolume of the points with z <= z_i.
    order = np.argsort(points[:, -1], kind="stable")
    pts = points[order]
    z = np.append(pts[:, -1], ref[-1])
    total = 0.0
    for i in range(pts.shape[0]):
        height = z[i + 1] - z[i]
        if height > 0:
            prefix = pts[: i + 1, :-1]
            if m - 1 > 3 and prefix.shape[0] > 1:  # the 3-D staircase skips dominated points
                prefix = prefix[pareto_mask(prefix, ["minimize"] * (m - 1))]
            total += height * _hv(prefix, ref[:-1])
    return total


def _hv2(points: np.ndarray, ref: np.ndarray) -> float:
    # Sorted by x, the dominated region above [x_i, x_{i+1}) reaches down to the smallest y so far.
    order = np.lexsort((points[:, 1], points[:, 0]))
    x = points[order, 0]
    y_min = np.minimum.accumulate(points[order, 1])
    widths = np.diff(np.append(x, ref[0]))
    return float(np.sum(widths * (ref[1] - y_min)))


def _hv3(points: np.ndarray, ref: np.ndarray) -> float:
    # Insert points by increasing z into a 2-D staircase whose area is updated incrementally;
    # each slab between consecutive z values contributes area * thickness.
    order = np.argsort(points[:, 2], kind="stable")
    pts = points[order].tolist()
    rx, ry, rz = (float(v) for v in ref)
    xs: list[float] = []  # staircase: x ascending, y strictly descending, nothing dominated
    ys: list[float] = []
    area = 0.0
    total = 0.0
    for k, (px, py, pz) in enumerate(pts):
        area += _staircase_insert(xs, ys, px, py, rx, ry)
        z_next = pts[k + 1][2] if k + 1 < len(pts) else rz
        total += area * (z_next - pz)
    return total


def _staircase_insert(
    xs: list[float], ys: list[float], px: float, py: float, rx: float, ry: float
) -> float:
    """Add ``(px, py)`` to the staircase in place and return the area it adds."""
    i = bisect.bisect_left(xs, px)
    if i > 0 and ys[i - 1] <= py:
        return 0.0
    if i < len(xs) and xs[i] == px and ys[i] <= py:
        return 0.0
    # The new point dominates the run of points from i whose y is >= py.
    e = i
    while e < len(ys) and ys[e] >= py:
        e += 1
    x_end = xs[e] if e < len(xs) else rx
    y_left = ys[i - 1] if i > 0 else ry
    old = ((xs[i] if i < e else x_end) - px) * (ry - y_left)
    for j in range(i, e):
        x_next = xs[j + 1] if j + 1 < e else x_end
        old += (x_next - xs[j]) * (ry - ys[j])
    xs[i:e] = [px]
    ys[i:e] = [py]
    return (x_end - px) * (ry - py) - old
