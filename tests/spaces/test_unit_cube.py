from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from paretune import ConfigError
from paretune.spaces import (
    Categorical,
    DimKind,
    Encoding,
    Fixed,
    Float,
    Int,
    SearchSpace,
    UnitCube,
)

C, N, K = DimKind.CONTINUOUS, DimKind.INTEGER, DimKind.CATEGORICAL


def small_space() -> SearchSpace:
    return SearchSpace(
        [
            Float("lr", low=1e-4, high=1e-1, log=True),
            Int("layers", low=1, high=4),
            Categorical("act", choices=("relu", "gelu", "silu")),
            Fixed("seed", value=0),
            Int("width", low=64, high=64),
            Categorical("flag", choices=(True, False)),
            Categorical("size", choices=(8, 16, 32), ordered=True),
            Categorical("one", choices=("only",)),
        ]
    )


def test_single_values_and_fixed_have_no_column() -> None:
    cube = UnitCube(small_space())
    assert cube.dim == 5
    assert cube.kinds == (C, N, K, K, N)
    assert [cube.column(n) for n in cube.space.names] == [0, 1, 2, None, None, 3, 4, None]
    assert cube.bounds.dtype == torch.float64
    assert cube.bounds.tolist() == [[0.0] * 5, [1.0] * 5]
    with pytest.raises(KeyError):
        cube.column("nope")


def test_values_are_the_grid_and_the_choices_in_cube_coordinates() -> None:
    cube = UnitCube(small_space())
    assert cube.values("lr") is None and cube.values("seed") is None
    assert cube.values("width") is None  # a single value: no column
    assert cube.values("layers") == [0.0, 1 / 3, 2 / 3, 1.0]
    assert cube.values("act") == [0.0, 0.5, 1.0]
    assert cube.values("flag") == [0.0, 1.0]
    assert cube.values("size") == [0.0, 0.5, 1.0]


def test_n_values_counts_without_building_the_grid() -> None:
    enc = Encoding(
        SearchSpace(
            [*small_space(), Int("big", low=0, high=10**9), Float("f", low=0, high=1, step=0.1)]
        )
    )
    counts = {name: enc.n_values(name) for name in enc.space.names}
    assert counts == {
        "lr": None,
        "layers": 4,
        "act": 3,
        "seed": 1,
        "width": 1,
        "flag": 2,
        "size": 3,
        "one": 1,
        "big": 10**9 + 1,
        "f": 11,
    }
    with pytest.raises(KeyError):
        enc.n_values("nope")


def test_encode_is_the_encodings_varying_columns_scaled() -> None:
    space = small_space()
    cube = UnitCube(space)
    rows = [space.sample(i) for i in range(20)]
    enc = Encoding(space, categorical="index")
    full = enc.encode(rows)
    X = cube.encode(rows)
    assert X.dtype == torch.float64 and X.shape == (20, 5)
    # lr, layers, flag (index / 1) and size keep their values; width and one are dropped.
    torch.testing.assert_close(X[:, [0, 1, 3, 4]], full[:, [0, 1, 4, 5]], rtol=0, atol=0)
    torch.testing.assert_close(X[:, 2], full[:, 2] / 2, rtol=0, atol=0)  # act: index / (k - 1)
    with pytest.raises(ConfigError):
        cube.encode([{"lr": 1.0}])
    assert cube.encode([{"lr": 1.0}], partial=True).tolist() == [[0.0] * 5]


def test_round_trip_and_decode_of_random_points(
    mixed_space: SearchSpace, assert_same_params: Callable[..., None]
) -> None:
    cube = UnitCube(mixed_space)
    rng = np.random.default_rng(0)
    samples = [mixed_space.sample(rng) for _ in range(200)]
    X = cube.encode(samples)
    assert bool(((X >= 0) & (X <= 1)).all())
    for got, want in zip(cube.decode(X), samples, strict=True):
        assert_same_params(got, want)
    points = rng.uniform(-0.2, 1.2, size=(200, cube.dim))
    for params in cube.decode(points):
        assert mixed_space.validate(params) == params


def test_decode_rejects_bad_shapes_and_values() -> None:
    cube = UnitCube(small_space())
    with pytest.raises(ConfigError, match="n x 5"):
        cube.decode(np.zeros((1, 4)))
    with pytest.raises(ConfigError, match="finite"):
        cube.decode(np.full((1, 5), np.nan))


def test_an_empty_cube_decodes_to_the_single_values() -> None:
    space = SearchSpace([Fixed("tag", value="v1"), Int("n", low=3, high=3)])
    cube = UnitCube(space)
    assert cube.dim == 0
    assert cube.decode(torch.zeros(2, 0)) == [{"tag": "v1", "n": 3}] * 2
