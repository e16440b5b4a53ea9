from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from botorch.utils.multi_objective.hypervolume import Hypervolume
from botorch.utils.multi_objective.pareto import is_non_dominated

from paretune._errors import ConfigError
from paretune.objectives._pareto import (
    dominates,
    hypervolume,
    log10_hv_difference,
    pareto_mask,
)


def _botorch_hv(points: np.ndarray, ref: np.ndarray) -> float:
    """BoTorch's hypervolume (maximisation) of a minimisation problem."""
    y = -torch.as_tensor(points, dtype=torch.float64)
    y = y[(y > -torch.as_tensor(ref)).all(dim=-1)]
    if y.shape[0] == 0:
        return 0.0
    return float(
        Hypervolume(-torch.as_tensor(ref, dtype=torch.float64)).compute(y[is_non_dominated(y)])
    )


def _front_like(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """Points near the positive unit sphere: many mutually non-dominated."""
    x = rng.random((n, m)) + 1e-3
    return x / np.linalg.norm(x, axis=1, keepdims=True) * rng.uniform(1.0, 1.2, size=(n, 1))


@pytest.mark.parametrize("m", [2, 3, 4])
@pytest.mark.parametrize("kind", ["uniform", "front", "ties"])
def test_hypervolume_matches_botorch(m: int, kind: str) -> None:
    rng = np.random.default_rng(100 * m + len(kind))
    for n in (1, 7, 60):
        if kind == "uniform":
            points = rng.random((n, m))
        elif kind == "front":
            points = _front_like(rng, n, m)
        else:  # a coarse grid: duplicates and ties in single coordinates
            points = np.round(rng.random((n, m)) * 4) / 4
        ref = np.full(m, 1.1)
        assert hypervolume(points, ref) == pytest.approx(_botorch_hv(points, ref), rel=1e-10)


def test_hypervolume_of_a_larger_4d_front_matches_botorch() -> None:
    points = _front_like(np.random.default_rng(7), 150, 4)
    ref = np.full(4, 1.25)
    assert hypervolume(points, ref) == pytest.approx(_botorch_hv(points, ref), rel=1e-10)


def test_hypervolume_known_values() -> None:
    assert hypervolume(np.array([[0.0, 0.0]]), np.array([1.0, 2.0])) == pytest.approx(2.0)
    assert hypervolume(np.array([[0.0, 0.0, 0.0]]), np.ones(3)) == pytest.approx(1.0)
    # Two boxes of 0.5 x 1 overlapping in 0.5 x 0.5.
    two = np.array([[0.0, 0.5], [0.5, 0.0]])
    assert hypervolume(two, np.ones(2)) == pytest.approx(0.75)
    # Three unit-cube corners in 3-D: inclusion-exclusion gives 3 * 0.5 - 3 * 0.25 + 0.125.
    three = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5]])
    assert hypervolume(three, np.ones(3)) == pytest.approx(0.875)
    assert hypervolume(np.array([[0.25], [0.5]]), np.array([1.0])) == pytest.approx(0.75)


def test_hypervolume_counts_only_points_strictly_inside_the_reference_box() -> None:
    ref = np.array([1.0, 1.0])
    assert hypervolume(np.array([[1.0, 0.0], [0.0, 1.0], [2.0, -5.0]]), ref) == 0.0
    assert hypervolume(np.zeros((0, 2)), ref) == 0.0
    assert hypervolume(np.array([[np.nan, 0.0], [0.5, 0.5]]), ref) == pytest.approx(0.25)
    assert hypervolume(np.array([[-np.inf, 0.0], [-np.inf, 0.5]]), ref) == math.inf


def test_hypervolume_ignores_order_duplicates_and_dominated_points() -> None:
    rng = np.random.default_rng(3)
    for m in (2, 3, 4):
        points = _front_like(rng, 40, m)
        ref = np.full(m, 1.3)
        base = hypervolume(points, ref)
        extra = np.vstack([points, points[:5], points[:10] + 0.05])
        assert hypervolume(extra[rng.permutation(len(extra))], ref) == pytest.approx(base)


def test_hypervolume_rejects_mismatched_shapes() -> None:
    with pytest.raises(ConfigError, match="n x 3"):
        hypervolume(np.zeros((4, 2)), np.ones(3))
    with pytest.raises(ConfigError, match="finite"):
        hypervolume(np.zeros((4, 2)), np.array([1.0, np.inf]))


def _brute_force_mask(values: np.ndarray, directions: list[str]) -> np.ndarray:
    signs = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    v = values * signs
    keep = []
    for i in range(len(v)):
        if np.isnan(v[i]).any():
            keep.append(False)
            continue
        dominated = False
        for j in range(len(v)):
            usable = i != j and not np.isnan(v[j]).any()
            if usable and (v[j] <= v[i]).all() and (v[j] < v[i]).any():
                dominated = True
                break
        keep.append(not dominated)
    return np.array(keep)


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_pareto_mask_matches_brute_force(m: int) -> None:
    rng = np.random.default_rng(m)
    directions_options = [list(d) for d in itertools.product(["minimize", "maximize"], repeat=m)][
        :4
    ]
    for directions in directions_options:
        for n in (0, 1, 5, 80):
            values = np.round(rng.random((n, m)) * 6) / 6  # ties and duplicates
            expected = _brute_force_mask(values, directions)
            np.testing.assert_array_equal(pareto_mask(values, directions), expected)


@pytest.mark.parametrize("m", [1, 2, 3])
def test_pareto_mask_handles_infinities(m: int) -> None:
    rng = np.random.default_rng(10 + m)
    values = rng.choice([-np.inf, 0.0, 1.0, np.inf], size=(40, m))
    for directions in (["minimize"] * m, ["maximize"] * m):
        expected = _brute_force_mask(values, directions)
        np.testing.assert_array_equal(pareto_mask(values, directions), expected)


def test_pareto_mask_is_fast_for_large_two_objective_tables() -> None:
    values = np.random.default_rng(0).random((200_000, 2))
    mask = pareto_mask(values, ["minimize", "maximize"])
    front = values[mask]
    assert 0 < len(front) < 100
    assert np.all(np.diff(front[np.argsort(front[:, 0]), 1]) > 0)


def test_pareto_mask_keeps_every_copy_of_a_front_point_and_drops_nan_rows() -> None:
    values = np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0], [0.0, 3.0], [np.nan, 0.0]])
    mask = pareto_mask(values, ["minimize", "minimize"])
    np.testing.assert_array_equal(mask, [True, True, False, True, False])
    mask = pareto_mask(values, ["maximize", "maximize"])
    np.testing.assert_array_equal(mask, [False, False, True, True, False])


def test_pareto_mask_rejects_bad_directions() -> None:
    with pytest.raises(ConfigError, match="minimize' or 'maximize'"):
        pareto_mask(np.zeros((2, 2)), ["minimize", "max"])
    with pytest.raises(ConfigError, match="n x 2"):
        pareto_mask(np.zeros((2, 3)), ["minimize", "maximize"])
    with pytest.raises(ConfigError, match="sequence"):
        pareto_mask(np.zeros((2, 1)), "minimize")


def test_log10_hv_difference() -> None:
    assert log10_hv_difference(0.9, 1.0) == pytest.approx(-1.0)
    assert log10_hv_difference(1.0, 1.0) == pytest.approx(-12.0)
    assert log10_hv_difference(1.5, 1.0, floor=1e-6) == pytest.approx(-6.0)
    with pytest.raises(ConfigError):
        log10_hv_difference(math.nan, 1.0)
    with pytest.raises(ConfigError):
        log10_hv_difference(0.5, 1.0, floor=0.0)


def _brute_force_tolerant_mask(values: np.ndarray, directions: list[str], margins) -> np.ndarray:
    v = values * np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    m = np.asarray(margins, dtype=float)
    keep = []
    for i in range(len(v)):
        beaten = any(
            j != i and (v[j] <= v[i] - m).all() and (v[j] < v[i]).any() for j in range(len(v))
        )
        keep.append(not beaten)
    return np.array(keep, dtype=bool)


@pytest.mark.parametrize("m", [1, 2, 3])
def test_pareto_mask_with_tolerance_keeps_rows_within_the_margins(m: int) -> None:
    rng = np.random.default_rng(20 + m)
    directions = ["maximize", "minimize", "minimize"][:m]
    for margins in ([0.0] * m, [0.1] + [0.0] * (m - 1), [0.05] * m):
        for n in (0, 1, 6, 60):
            values = np.round(rng.random((n, m)) * 10) / 10
            expected = _brute_force_tolerant_mask(values, directions, margins)
            got = pareto_mask(values, directions, tolerance=margins)
            np.testing.assert_array_equal(got, expected)
            # A margin only ever adds rows to the plain front.
            assert (got >= pareto_mask(values, directions)).all()


def test_pareto_mask_tolerance_takes_the_near_front_of_a_noisy_metric() -> None:
    # accuracy (max), cost (min): the front is rows 0 and 2; row 1 is 0.004 below row 0 at
    # a higher cost (within a 0.01 margin), row 3 is 0.03 below at a higher cost.
    values = np.array([[0.780, 0.07], [0.776, 0.25], [0.783, 0.33], [0.750, 0.20]])
    directions = ["maximize", "minimize"]
    np.testing.assert_array_equal(pareto_mask(values, directions), [True, False, True, False])
    np.testing.assert_array_equal(
        pareto_mask(values, directions, tolerance=[0.01, 0.0]), [True, True, True, False]
    )


def test_pareto_mask_rejects_bad_tolerances() -> None:
    with pytest.raises(ConfigError, match="one margin per column"):
        pareto_mask(np.zeros((2, 2)), ["minimize", "minimize"], tolerance=[0.1])
    with pytest.raises(ConfigError, match="finite and >= 0"):
        pareto_mask(np.zeros((2, 2)), ["minimize", "minimize"], tolerance=[0.1, -0.1])
    with pytest.raises(ConfigError, match="finite and >= 0"):
        pareto_mask(np.zeros((2, 2)), ["minimize", "minimize"], tolerance=[np.nan, 0.0])


@pytest.mark.parametrize("m", [1, 2, 3])
def test_dominates_is_the_pairwise_test_behind_pareto_mask(m: int) -> None:
    rng = np.random.default_rng(30 + m)
    directions = ["maximize", "minimize", "maximize"][:m]
    for margins in (None, [0.1] + [0.0] * (m - 1)):
        values = np.round(rng.random((40, m)) * 6) / 6  # ties and duplicates
        values[rng.random(values.shape) < 0.05] = np.nan
        values[rng.random(values.shape) < 0.05] = np.inf
        mask = pareto_mask(values, directions, tolerance=margins)
        finite = ~np.isnan(values).any(axis=1)
        beaten = [
            any(dominates(v, row, directions, tolerance=margins) for v in values) for row in values
        ]
        np.testing.assert_array_equal(mask, finite & ~np.array(beaten))


def test_dominates_takes_plain_floats_and_directions() -> None:
    # accuracy (max), cost (min)
    directions = ["maximize", "minimize"]
    assert dominates([0.8, 1.0], [0.7, 1.0], directions)
    assert dominates((0.8, 0.5), (0.8, 1.0), directions)
    assert not dominates([0.8, 1.0], [0.8, 1.0], directions)  # equal rows: neither
    assert not dominates([0.9, 2.0], [0.8, 1.0], directions)  # a trade-off
    assert not dominates([0.7, 1.0], [0.8, 1.0], directions)
    assert dominates([0.9, 1.0], [0.8, 1.0], directions, tolerance=[0.05, 0.0])
    assert not dominates([0.84, 1.0], [0.8, 1.0], directions, tolerance=[0.05, 0.0])


def test_nan_never_dominates_and_is_never_dominated() -> None:
    directions = ["minimize", "minimize"]
    assert not dominates([math.nan, 0.0], [1.0, 1.0], directions)
    assert not dominates([0.0, 0.0], [1.0, math.nan], directions)
    assert not dominates([math.nan, math.nan], [math.nan, math.nan], directions)


def test_dominates_rejects_mismatched_rows() -> None:
    with pytest.raises(ConfigError, match="2 values"):
        dominates([0.0, 1.0, 2.0], [0.0, 1.0], ["minimize", "minimize"])
    with pytest.raises(ConfigError, match="minimize' or 'maximize'"):
        dominates([0.0], [1.0], ["min"])
    with pytest.raises(ConfigError, match="finite and >= 0"):
        dominates([0.0], [1.0], ["minimize"], tolerance=[-1.0])
