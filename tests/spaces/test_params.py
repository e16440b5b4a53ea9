from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from paretune import ConfigError
from paretune.spaces import Categorical, Condition, Fixed, Float, Int, SearchSpace

INVALID: list[tuple[Callable[[], Any], tuple[str, ...], str]] = [
    # (constructor, expected path, text the message must contain)
    (lambda: Float("x", low=3, high=1), ("x", "low"), "low=3.0, high=1.0"),
    (lambda: Float("x", low=0.0, high=1.0, log=True), ("x", "low"), "low=0.0"),
    (lambda: Float("x", low=-1.0, high=1.0, log=True), ("x", "low"), "low=-1.0"),
    (lambda: Float("x", low=1e-3, high=1.0, log=True, step=0.1), ("x", "step"), "step=0.1"),
    (lambda: Float("x", low=0.0, high=1.0, step=0.0), ("x", "step"), "step=0.0"),
    (lambda: Float("x", low=0.0, high=1.0, step=-0.5), ("x", "step"), "step=-0.5"),
    (lambda: Float("x", low=0.0, high=1.0, step=0.3), ("x", "step"), "step=0.3"),
    (lambda: Float("x", low="a", high=1.0), ("x", "low"), "'a'"),
    (lambda: Float("x", low=True, high=1.0), ("x", "low"), "True"),
    (lambda: Float("x", low=0.0, high=math.inf), ("x", "high"), "inf"),
    (lambda: Float("x", low=0.0, high=1.0, log="yes"), ("x", "log"), "'yes'"),
    (lambda: Int("x", low=1.5, high=3), ("x", "low"), "1.5"),
    (lambda: Int("x", low=5, high=3), ("x", "low"), "low=5, high=3"),
    (lambda: Int("x", low=0, high=8, log=True), ("x", "low"), "low=0"),
    (lambda: Int("x", low=1, high=9, log=True, step=2), ("x", "step"), "step=2"),
    (lambda: Int("x", low=0, high=8, step=0), ("x", "step"), "step=0"),
    (lambda: Int("x", low=0, high=10, step=3), ("x", "step"), "step=3"),
    (lambda: Categorical("x", choices=()), ("x", "choices"), "[]"),
    (lambda: Categorical("x", choices="abc"), ("x", "choices"), "'abc'"),
    (lambda: Categorical("x", choices=(1, 1.0)), ("x", "choices"), "1.0"),
    (lambda: Categorical("x", choices=("a", [1])), ("x", "choices"), "[1]"),
    (lambda: Categorical("x", choices=(float("nan"),)), ("x", "choices"), "nan"),
    (lambda: Fixed("x", value={"a": 1}), ("x", "value"), "{'a': 1}"),
    (lambda: Float("", low=0.0, high=1.0), ("name",), "''"),
    (lambda: Float(3, low=0.0, high=1.0), ("name",), "3"),
    (lambda: Int("x" * 513, low=0, high=1), ("name",), "xxx"),
    (lambda: Fixed("x", value=1, condition="opt"), ("x", "condition"), "'opt'"),
    (lambda: Condition("", ("a",)), ("condition", "parent"), "''"),
    (lambda: Condition("a", ()), ("condition", "values"), "empty"),
    (lambda: Condition("a", (object,)), ("condition", "values"), "object"),
]


@pytest.mark.parametrize(("make", "path", "text"), INVALID)
def test_invalid_parameters_raise_config_error_with_path(
    make: Callable[[], Any], path: tuple[str, ...], text: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.path == path
    assert text in str(info.value)
    assert isinstance(info.value, ValueError)


def test_parameters_are_frozen_and_keyword_only() -> None:
    with pytest.raises(TypeError):
        Float("x", 0.0, 1.0)  # type: ignore[misc]
    p = Float("x", low=0, high=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.low = 0.5  # type: ignore[misc]


def test_values_are_normalised() -> None:
    f = Float("x", low=0, high=2)
    assert (type(f.low), type(f.high)) == (float, float)
    c = Categorical("c", choices=["a", np.int64(3)])
    assert c.choices == ("a", 3) and type(c.choices[1]) is int
    assert Condition("c", "a").values == ("a",)
    assert Condition("c", ["a", 3]).values == ("a", 3)
    assert Float("x", low=0, high=1) == Float("x", low=0.0, high=1.0)


def test_to_optuna() -> None:
    assert Float("x", low=1e-5, high=1.0, log=True).to_optuna() == FloatDistribution(
        1e-5, 1.0, log=True
    )
    assert Float("x", low=0.0, high=1.0, step=0.25).to_optuna() == FloatDistribution(
        0.0, 1.0, step=0.25
    )
    assert Int("x", low=1, high=64, log=True).to_optuna() == IntDistribution(1, 64, log=True)
    assert Int("x", low=0, high=12, step=4).to_optuna() == IntDistribution(0, 12, step=4)
    assert Categorical("x", choices=("a", None)).to_optuna() == CategoricalDistribution(("a", None))
    assert Fixed("x", value=3).to_optuna() == CategoricalDistribution([3])


@pytest.mark.parametrize(
    ("low", "high", "step"),
    [(0.0, 1.0, 0.1), (0.1, 0.7, 0.2), (0.0, 1.0, 1 / 3), (-1.0, 2.0, 0.3), (0.5, 0.5, 0.1)],
)
def test_step_grid_matches_optuna_without_warnings(low: float, high: float, step: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns when it has to shrink a range
        param = Float("x", low=low, high=high, step=step)
        dist = param.to_optuna()
    assert math.isclose(param.high, high, rel_tol=1e-8, abs_tol=1e-12)
    assert dist.high == param.high
    n = param.n_steps
    assert n is not None
    assert param.grid_value(0) == low and param.grid_value(n) == param.high
    for k in range(n + 1):
        assert param.contains(param.grid_value(k))
        assert dist._contains(param.grid_value(k))


def test_step_float_grid_values_are_clean_decimals() -> None:
    param = Float("x", low=0.0, high=0.3, step=0.1)
    assert [param.grid_value(k) for k in range(4)] == [0.0, 0.1, 0.2, 0.3]
    assert param.contains(0.1 + 0.2)  # 0.30000000000000004 is on the grid up to rounding
    assert param.canonical(0.1 + 0.2) == 0.3
    assert not param.contains(0.15)
    assert not param.contains(0.4)
    assert not param.contains(-0.1)


def test_single_value_ranges() -> None:
    for param, value in [
        (Float("x", low=2.0, high=2.0), 2.0),
        (Float("x", low=0.5, high=0.5, log=True), 0.5),
        (Int("x", low=4, high=4), 4),
        (Int("x", low=4, high=4, log=True), 4),
        (Categorical("x", choices=("only",)), "only"),
        (Fixed("x", value=None), None),
    ]:
        assert param.to_optuna().single()
        assert param.contains(value)
        assert param.sample(np.random.default_rng(0)) == value


def test_contains() -> None:
    f = Float("x", low=1e-5, high=1.0, log=True)
    assert f.contains(1e-5) and f.contains(1) and f.contains(np.float32(0.5))
    assert not f.contains(0.0) and not f.contains(1.5) and not f.contains("0.5")
    assert not f.contains(True)
    i = Int("x", low=0, high=12, step=4)
    assert i.contains(8) and i.contains(np.int64(8)) and i.contains(8.0)
    assert not i.contains(6) and not i.contains(8.5) and not i.contains(16) and not i.contains(True)
    c = Categorical("x", choices=(True, 2, "a", None))
    assert c.index(2) == 1 and c.index(True) == 0 and c.index(2.0) == 1
    assert c.contains(None) and not c.contains(False) and not c.contains("b")
    assert not c.contains(1)  # True is a bool choice; the number 1 is not it
    assert Fixed("x", value=False).contains(False) and not Fixed("x", value=False).contains(0)


def test_int_log_sampling_reaches_both_ends() -> None:
    param = Int("x", low=1, high=4, log=True)
    rng = np.random.default_rng(0)
    seen = {param.sample(rng) for _ in range(500)}
    assert seen == {1, 2, 3, 4}


def test_condition_matches() -> None:
    cond = Condition("flag", (True,))
    assert cond.matches(True) and not cond.matches(1) and not cond.matches(False)
    assert Condition("n", (1, 2)).matches(2.0)


def test_import_does_not_load_heavy_libraries() -> None:
    heavy = ["torch", "botorch", "ray", "mlflow", "transformers"]
    code = f"import sys, paretune.spaces\nprint([m for m in {heavy!r} if m in sys.modules])\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("choices", [(True, 1), (0, "a", False), (1.0, True)])
def test_categorical_rejects_a_bool_and_its_number(choices: tuple[object, ...]) -> None:
    # Optuna stores True and 1 as one choice: the trial would record the wrong value.
    with pytest.raises(ConfigError, match="Optuna stores as the same choice"):
        Categorical("x", choices=choices)


def test_ordered_categorical_from_yaml_and_its_validation() -> None:
    space = SearchSpace.from_dict(
        {"rank": {"type": "categorical", "choices": [0, 4, 8, 16], "ordered": True}}
    )
    assert space["rank"].ordered is True
    assert space["rank"].to_optuna() == CategoricalDistribution((0, 4, 8, 16))
    assert (
        SearchSpace.from_dict({"a": {"type": "categorical", "choices": [1]}})["a"].ordered is False
    )
    with pytest.raises(ConfigError, match="`ordered` must be true or false") as info:
        Categorical("rank", choices=[0, 4], ordered="yes")  # type: ignore[arg-type]
    assert info.value.path == ("rank", "ordered")
