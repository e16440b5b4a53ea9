"""The bounded model's data: Pareto layers, farthest points, the fit subset and the baseline."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from paretune.search._botorch.subset import (
    farthest_points,
    fit_subset,
    near_front,
    pareto_layers,
)


def brute_front(y: np.ndarray) -> set[int]:
    return {
        i
        for i in range(len(y))
        if not any((y[j] >= y[i]).all() and (y[j] > y[i]).any() for j in range(len(y)))
    }


def test_pareto_layers_partition_the_rows_front_first():
    y = np.random.default_rng(0).normal(size=(60, 2))
    layers = list(pareto_layers(y))
    assert set(layers[0].tolist()) == brute_front(y)
    assert sorted(itertools.chain.from_iterable(layers)) == list(range(60))
    # No point of a layer dominates a point of an earlier one.
    for a, b in itertools.pairwise(layers):
        for i, j in itertools.product(a, b):
            assert not ((y[j] >= y[i]).all() and (y[j] > y[i]).any())


def test_farthest_points_avoid_the_start_and_spread_out():
    points = np.array([[0.0], [0.1], [0.5], [0.9], [1.0]])
    assert farthest_points(points, 2, start=np.array([0])).tolist() == [4, 2]
    assert farthest_points(points, 10, start=np.array([0, 1])).size == 3


@pytest.mark.parametrize("cap", [10, 40, 99])
def test_fit_subset_keeps_the_cap_the_front_and_the_latest(cap):
    rng = np.random.default_rng(1)
    X = torch.tensor(rng.random((100, 3)))
    Y = torch.tensor(rng.normal(size=(100, 2)))
    keep = fit_subset(X, Y, torch.ones(100, dtype=torch.bool), cap)
    assert len(keep) == cap == len(set(keep.tolist()))
    front = brute_front(Y.numpy())
    assert front <= set(keep.tolist())
    assert 99 in keep
    assert (fit_subset(X, Y, torch.ones(100, dtype=torch.bool), cap) == keep).all()


def test_fit_subset_keeps_everything_under_the_cap_and_spreads_a_huge_front():
    X = torch.rand(30, 2, dtype=torch.float64)
    t = torch.linspace(0, 1, 30, dtype=torch.float64)
    Y = torch.stack([t, 1 - t], dim=-1)  # every point on the front
    assert fit_subset(X, Y, torch.ones(30, dtype=torch.bool), 30).tolist() == list(range(30))
    keep = fit_subset(X, Y, torch.ones(30, dtype=torch.bool), 5)
    assert len(keep) == 5
    assert {0, 29} <= set(keep.tolist())  # the front's ends


def test_the_front_is_of_the_feasible_points():
    X = torch.rand(20, 2, dtype=torch.float64)
    Y = torch.zeros(20, 2, dtype=torch.float64)
    Y[:, 0] = torch.arange(20, dtype=torch.float64)
    Y[:, 1] = -torch.arange(20, dtype=torch.float64)
    feasible = torch.zeros(20, dtype=torch.bool)
    feasible[:4] = True
    base = near_front(Y, feasible, 4)
    assert base.tolist() == [0, 1, 2, 3]
    assert set(fit_subset(X, Y, feasible, 8).tolist()) >= {0, 1, 2, 3}


def test_near_front_takes_whole_layers_then_spreads_the_next():
    # Three layers of 3 points each on parallel lines.
    Y = torch.tensor(
        [[2.0 - k + a, 2.0 - k - a] for k in range(3) for a in (-1.0, 0.0, 1.0)],
        dtype=torch.float64,
    )
    ok = torch.ones(9, dtype=torch.bool)
    assert near_front(Y, ok, 3).tolist() == [0, 1, 2]
    five = near_front(Y, ok, 5).tolist()
    assert five[:3] == [0, 1, 2]
    assert set(five[3:]) == {3, 5}  # the ends of the second layer
    assert near_front(Y, ok, 20).tolist() == list(range(9))
