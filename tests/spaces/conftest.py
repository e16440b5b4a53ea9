from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from paretune.spaces import Categorical, Condition, Fixed, Float, Int, SearchSpace


@pytest.fixture
def mixed_space() -> SearchSpace:
    """Every parameter type, log and step ranges, single values and a chain of two conditions."""
    return SearchSpace(
        [
            Categorical("optimizer", choices=("sgd", "adam", "rmsprop")),
            Float("lr", low=1e-5, high=1.0, log=True),
            Float("momentum", low=0.0, high=0.99, condition=Condition("optimizer", ("sgd",))),
            Categorical("nesterov", choices=(True, False), condition=Condition("optimizer", "sgd")),
            Int("dampening", low=1, high=1000, log=True, condition=Condition("nesterov", (True,))),
            Float("beta2", low=0.9, high=0.9999, condition=Condition("optimizer", ("adam",))),
            Float("weight_decay", low=0.0, high=0.3, step=0.05),
            Int("batch_size", low=16, high=128, step=16),
            Int("layers", low=2, high=2),
            Float("warmup", low=0.1, high=0.1),
            Categorical("activation", choices=("gelu", None, 1, 2.5)),
            Fixed("seed", value=7),
        ]
    )


def _assert_same_params(got: Mapping[str, Any], want: Mapping[str, Any]) -> None:
    assert list(got) == list(want)
    for name, value in want.items():
        assert type(got[name]) is type(value), name
        if isinstance(value, float):
            assert math.isclose(got[name], value, rel_tol=1e-9, abs_tol=1e-12), name
        else:
            assert got[name] == value, name


@pytest.fixture
def assert_same_params() -> Callable[[Mapping[str, Any], Mapping[str, Any]], None]:
    """Asserts two params dicts agree: same keys in order, same types, floats to 1e-9."""
    return _assert_same_params
