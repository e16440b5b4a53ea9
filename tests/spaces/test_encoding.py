from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from paretune import ConfigError
from paretune.spaces import (
    Categorical,
    Condition,
    DimKind,
    Encoding,
    Fixed,
    Float,
    Int,
    SearchSpace,
)

C, N, K = DimKind.CONTINUOUS, DimKind.INTEGER, DimKind.CATEGORICAL
MODES = ["onehot", "index"]


def small_space() -> SearchSpace:
    return SearchSpace(
        [
            Float("lr", low=1e-4, high=1e-1, log=True),
            Int("layers", low=1, high=4),
            Categorical("act", choices=("relu", "gelu", "silu")),
            Float("drop", low=0.0, high=0.5, step=0.25),
            Fixed("seed", value=0),
            Int("width", low=64, high=64),
        ]
    )


# --- layout ---------------------------------------------------------------------------------


def test_layout_onehot() -> None:
    enc = Encoding(small_space())
    assert enc.dim == 7
    assert enc.kinds == (C, N, K, K, K, N, N)
    assert enc.bounds.dtype == torch.float64
    assert enc.bounds.tolist() == [[0.0] * 7, [1.0] * 6 + [0.0]]
    assert enc.columns("lr") == slice(0, 1)
    assert enc.columns("act") == slice(2, 5)
    assert enc.columns("seed") == slice(6, 6)
    assert enc.columns("width") == slice(6, 7)
    assert enc.categorical_groups == {"act": [2, 3, 4]}
    assert enc.cat_dims == [2, 3, 4]
    assert enc.discrete_values == {
        1: [0.0, 1 / 3, 2 / 3, 1.0],
        5: [0.0, 0.5, 1.0],
        6: [0.0],
    }
    with pytest.raises(KeyError):
        enc.columns("nope")


def test_layout_index() -> None:
    enc = Encoding(small_space(), categorical="index")
    assert enc.dim == 5
    assert enc.kinds == (C, N, K, N, N)
    assert enc.bounds.tolist() == [[0.0] * 5, [1.0, 1.0, 2.0, 1.0, 0.0]]
    assert enc.categorical_groups == {"act": [2]}
    assert enc.cat_dims == [2]
    assert enc.discrete_values == {1: [0.0, 1 / 3, 2 / 3, 1.0], 3: [0.0, 0.5, 1.0], 4: [0.0]}


@pytest.mark.parametrize("mode", ["onehot", "index"])
def test_an_ordered_categorical_is_one_integer_column_at_k_over_n(mode: str) -> None:
    sizes = Categorical("size", choices=[0, 1, 3, 6, 12], ordered=True)
    space = SearchSpace([sizes, Categorical("one", choices=["a"], ordered=True)])
    enc = Encoding(space, categorical=mode)
    assert enc.kinds == (N, N)
    assert enc.bounds.tolist() == [[0.0, 0.0], [1.0, 0.0]]
    assert enc.categorical_groups == {} and enc.cat_dims == []
    assert enc.discrete_values == {0: [0.0, 0.25, 0.5, 0.75, 1.0], 1: [0.0]}
    assert enc.grid_positions("size") == [0.0, 0.25, 0.5, 0.75, 1.0]
    rows = [{"size": v, "one": "a"} for v in sizes.choices]
    X = enc.encode_numpy(rows)
    assert X[:, 0].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert enc.decode(X) == rows
    # Off-grid points snap to the nearest choice; out-of-range ones clip.
    assert [p["size"] for p in enc.decode(np.array([[0.3, 0.0], [0.62, 0.0], [1.4, 0.0]]))] == [
        1,
        3,
        12,
    ]


def test_dim_is_len_of_kinds_bounds_and_rows(mixed_space: SearchSpace) -> None:
    for mode in MODES:
        enc = Encoding(mixed_space, categorical=mode)
        assert len(enc.kinds) == enc.bounds.shape[1] == enc.dim
        assert enc.encode([mixed_space.sample(0)]).shape == (1, enc.dim)
        for col, values in enc.discrete_values.items():
            assert enc.kinds[col] is N
            assert values == sorted(values)
            assert values[0] == enc.bounds[0, col] and values[-1] == enc.bounds[1, col]


def test_invalid_mode() -> None:
    with pytest.raises(ConfigError) as info:
        Encoding(small_space(), categorical="ordinal")
    assert info.value.path == ("categorical",)
    assert "'ordinal'" in str(info.value)


# --- single parameters ----------------------------------------------------------------------


def test_log_float_ends_and_round_trip() -> None:
    space = SearchSpace([Float("lr", low=1e-5, high=1.0, log=True)])
    enc = Encoding(space)
    X = enc.encode([{"lr": 1e-5}, {"lr": 1e-3}, {"lr": 1.0}])
    assert X[:, 0].tolist()[0] == 0.0 and X[:, 0].tolist()[2] == 1.0
    assert X[1, 0].item() == pytest.approx(0.4)  # log-linear: 1e-3 is 2/5 of the way
    assert [p["lr"] for p in enc.decode(X)] == [1e-5, pytest.approx(1e-3, rel=1e-12), 1.0]


def test_int_log_snaps_to_the_nearest_integer_in_log_space() -> None:
    enc = Encoding(SearchSpace([Int("n", low=1, high=8, log=True)]))
    positions = enc.discrete_values[0]
    assert positions == pytest.approx([math.log(k) / math.log(8) for k in range(1, 9)])
    assert enc.encode([{"n": 8}]).item() == 1.0
    # sqrt(8) = 2.83 sits at 0.5; of its neighbours, 3 (at 0.528) is nearer than 2 (at 0.333).
    assert enc.decode(np.array([[0.5]])) == [{"n": 3}]
    assert enc.decode(np.array([[0.4]])) == [{"n": 2}]
    for k, t in enumerate(positions, start=1):
        assert enc.decode(np.array([[t]])) == [{"n": k}]


def test_step_float_snaps_to_grid() -> None:
    enc = Encoding(SearchSpace([Float("x", low=0.0, high=1.0, step=0.25)]))
    got = [p["x"] for p in enc.decode(np.array([[0.3], [0.4], [-0.2], [1.7], [0.874]]))]
    assert got == [0.25, 0.5, 0.0, 1.0, 0.75]
    assert enc.kinds == (N,)
    assert enc.discrete_values == {0: [0.0, 0.25, 0.5, 0.75, 1.0]}


def test_int_with_step() -> None:
    enc = Encoding(SearchSpace([Int("b", low=16, high=64, step=16)]))
    assert enc.discrete_values == {0: [0.0, 1 / 3, 2 / 3, 1.0]}
    assert enc.encode([{"b": 48}]).item() == pytest.approx(2 / 3)
    assert enc.decode(np.array([[0.55]])) == [{"b": 48}]


def test_single_value_ranges_encode_to_a_fixed_zero_column() -> None:
    space = SearchSpace(
        [
            Float("f", low=2.0, high=2.0),
            Float("g", low=3.0, high=3.0, log=True),
            Int("i", low=5, high=5),
            Float("s", low=0.5, high=0.5, step=0.1),
            Categorical("c", choices=("only",)),
        ]
    )
    params = {"f": 2.0, "g": 3.0, "i": 5, "s": 0.5, "c": "only"}
    enc = Encoding(space, categorical="index")
    assert enc.bounds.tolist() == [[0.0] * 5, [0.0] * 5]
    assert enc.kinds == (C, C, N, N, K)
    assert enc.encode([params]).tolist() == [[0.0] * 5]
    assert enc.decode(torch.tensor([[0.7, -3.0, 0.4, 1.0, 0.9]])) == [params]
    onehot = Encoding(space)
    assert onehot.encode([params]).tolist() == [[0.0, 0.0, 0.0, 0.0, 1.0]]


def test_fixed_has_no_columns_but_is_decoded() -> None:
    enc = Encoding(SearchSpace([Fixed("seed", value=3), Fixed("tag", value="x")]))
    assert enc.dim == 0 and enc.bounds.shape == (2, 0)
    assert enc.decode(np.zeros((2, 0))) == [{"seed": 3, "tag": "x"}] * 2


def test_onehot_argmax_and_index_rounding() -> None:
    space = SearchSpace([Categorical("c", choices=("a", "b", "c"))])
    onehot = Encoding(space)
    assert onehot.encode([{"c": "b"}]).tolist() == [[0.0, 1.0, 0.0]]
    got = onehot.decode(np.array([[0.2, 0.1, 0.9], [0.0, 0.0, 0.0], [0.5, 0.5, 0.1]]))
    assert [p["c"] for p in got] == ["c", "a", "a"]  # ties go to the first choice
    index = Encoding(space, categorical="index")
    got = index.decode(np.array([[1.4], [1.6], [-1.0], [7.0]]))
    assert [p["c"] for p in got] == ["b", "c", "a", "c"]


# --- conditions -----------------------------------------------------------------------------


def conditional() -> SearchSpace:
    return SearchSpace(
        [
            Categorical("opt", choices=("sgd", "adam")),
            Categorical("nesterov", choices=(True, False), condition=Condition("opt", "sgd")),
            Float("damp", low=0.0, high=1.0, condition=Condition("nesterov", (True,))),
        ]
    )


@pytest.mark.parametrize("mode", MODES)
def test_inactive_parameters_encode_as_zeros(mode: str) -> None:
    enc = Encoding(conditional(), categorical=mode)
    X = enc.encode([{"opt": "adam"}, {"opt": "sgd", "nesterov": False}])
    assert X[0, enc.columns("nesterov")].abs().sum() == 0
    assert X[0, enc.columns("damp")].abs().sum() == 0
    assert X[1, enc.columns("damp")].abs().sum() == 0


@pytest.mark.parametrize("mode", MODES)
def test_decode_follows_decoded_parents(mode: str) -> None:
    enc = Encoding(conditional(), categorical=mode)
    rng = np.random.default_rng(0)
    lower, upper = enc.bounds.numpy()
    for _ in range(50):
        X = rng.uniform(lower, upper, size=(1, enc.dim))
        sgd = enc.encode([{"opt": "sgd", "nesterov": True, "damp": 0.5}])[0, enc.columns("opt")]
        adam = enc.encode([{"opt": "adam"}])[0, enc.columns("opt")]
        X[0, enc.columns("opt")] = adam.numpy()
        assert enc.decode(X) == [{"opt": "adam"}]  # the children's columns are ignored
        X[0, enc.columns("opt")] = sgd.numpy()
        params = enc.decode(X)[0]
        assert list(params) == conditional().active(params)


def test_encode_rejects_invalid_params() -> None:
    enc = Encoding(conditional())
    with pytest.raises(ConfigError) as info:
        enc.encode([{"opt": "sgd", "nesterov": True, "damp": 0.5}, {"opt": "adam", "damp": 0.5}])
    assert info.value.path == (1, "damp")
    with pytest.raises(ConfigError, match="list"):
        enc.encode({"opt": "adam"})  # type: ignore[arg-type]


def test_decode_rejects_bad_shapes_and_values() -> None:
    enc = Encoding(conditional())
    with pytest.raises(ConfigError, match="n x 5"):
        enc.decode(np.zeros((2, 4)))
    with pytest.raises(ConfigError, match="n x 5"):
        enc.decode(np.zeros(5))
    with pytest.raises(ConfigError, match="NaN"):
        enc.decode(np.full((1, 5), np.nan))


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_encode_decode_round_trip(
    mixed_space: SearchSpace, mode: str, assert_same_params: Callable[..., None]
) -> None:
    enc = Encoding(mixed_space, categorical=mode)
    rng = np.random.default_rng(0)
    samples = [mixed_space.sample(rng) for _ in range(200)]
    encoded = enc.encode(samples)
    assert encoded.dtype == torch.float64 and encoded.shape == (200, enc.dim)
    lower, upper = enc.bounds
    assert bool(((encoded >= lower) & (encoded <= upper)).all())
    for got, want in zip(enc.decode(encoded), samples, strict=True):
        assert_same_params(got, want)
    np.testing.assert_array_equal(enc.encode_numpy(samples), encoded.numpy())
    assert {p["optimizer"] for p in samples} == {"sgd", "adam", "rmsprop"}
    assert any("dampening" in p for p in samples)


@pytest.mark.parametrize("mode", MODES)
def test_decode_of_random_points_is_valid_and_idempotent(
    mixed_space: SearchSpace, mode: str, assert_same_params: Callable[..., None]
) -> None:
    enc = Encoding(mixed_space, categorical=mode)
    rng = np.random.default_rng(1)
    lower, upper = enc.bounds.numpy()
    inside = rng.uniform(lower, upper, size=(200, enc.dim))
    outside = rng.uniform(lower - 0.5, upper + 0.5, size=(200, enc.dim))
    for X in (inside, torch.from_numpy(outside)):
        decoded = enc.decode(X)
        for params in decoded:
            assert mixed_space.validate(params) == params
        X1 = enc.encode(decoded)
        X2 = enc.encode(enc.decode(X1))
        torch.testing.assert_close(X2, X1, rtol=0, atol=1e-12)
        for got, want in zip(enc.decode(X1), decoded, strict=True):
            assert_same_params(got, want)
