"""Dynamic parameters, decision states and decisions (DAC's plain-data side)."""

from __future__ import annotations

import json
import math

import pytest

from paretune import ConfigError
from paretune.spaces.dynamic import (
    FEATURES,
    Decision,
    DecisionState,
    DynamicParam,
    StateTracker,
    dynamic_param_from_dict,
)

LR = DynamicParam(name="learning_rate", actions=(0.5, 1.0, 2.0), low=1e-4, high=1e-1, interval=5)


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"name": ""}, ("",)),
        ({"mode": "add"}, ("lr", "mode")),
        ({"interval": 0}, ("lr", "interval")),
        ({"interval": 2.5}, ("lr", "interval")),
        ({"low": 1.0, "high": 1.0}, ("lr", "low")),
        ({"low": 0.0, "high": 1.0}, ("lr", "low")),  # log scale needs low > 0
        ({"actions": (2.0,)}, ("lr", "actions")),
        ({"actions": (0.0, 1.0)}, ("lr", "actions")),
        ({"actions": (1.0, math.inf)}, ("lr", "actions")),
        ({"low": 1e-3}, ("lr", "high")),  # continuous, no finite high
        ({"low": 1e-3, "high": 1.0, "initial": 2.0}, ("lr", "initial")),
    ],
)
def test_invalid_dynamic_params_name_the_setting(kwargs: dict, path: tuple) -> None:
    spec = {
        "name": "lr",
        "actions": (0.5, 1.0),
        "low": 1e-4,
        "high": 1.0,
        "interval": 10,
        **kwargs,
    }
    if "low" in kwargs and "actions" not in kwargs and "high" not in kwargs:
        spec.pop("actions")
        spec.pop("high")
    elif "initial" in kwargs:
        spec.pop("actions")
    with pytest.raises(ConfigError) as info:
        DynamicParam(**spec)
    assert info.value.path == path


def test_from_dict_rejects_unknown_keys_and_non_numbers_with_their_path() -> None:
    with pytest.raises(ConfigError) as info:
        dynamic_param_from_dict({"actions": [0.5, 1.0], "speed": 1}, name="lr")
    assert info.value.path == ("lr", "speed")
    with pytest.raises(ConfigError) as info:
        dynamic_param_from_dict({"actions": [0.5, 1.0], "low": "small", "interval": 5}, name="lr")
    assert info.value.path == ("lr", "low")
    with pytest.raises(ConfigError) as info:
        dynamic_param_from_dict({"actions": [0.5, 1.0], "interval": 0}, name="lr")
    assert info.value.path == ("lr", "interval")
    with pytest.raises(ConfigError, match="needs `interval`") as info:
        dynamic_param_from_dict({"actions": [0.5, 1.0]}, name="lr")
    assert info.value.path == ("lr", "interval")
    with pytest.raises(ConfigError):
        dynamic_param_from_dict([1, 2])  # type: ignore[arg-type]


def test_apply_scales_or_sets_within_the_bounds() -> None:
    assert LR.apply(1e-3, 0) == pytest.approx(5e-4)
    assert LR.apply(1e-3, 1) == 1e-3
    assert LR.apply(1e-3, 2) == pytest.approx(2e-3)
    assert LR.apply(0.08, 2) == 0.1  # clipped to high
    assert LR.apply(1.5e-4, 0) == 1e-4  # clipped to low
    assert LR.clip(5.0) == 0.1 and LR.clip(0.0) == 1e-4
    with pytest.raises(ValueError, match="action"):
        LR.apply(1e-3, 3)
    with pytest.raises(ValueError, match="action"):
        LR.apply(1e-3, 0.5)
    setter = DynamicParam(interval=10, name="rank", actions=(4, 8, 16), mode="set", low=1, high=16)
    assert setter.apply(8.0, 0) == 4.0 and setter.apply(4.0, 2) == 16.0
    continuous = DynamicParam(interval=10, name="lr", low=1e-3, high=1.0)
    assert continuous.apply(0.5, 0.2) == 0.2 and continuous.apply(0.5, 7.0) == 1.0
    assert not continuous.discrete and continuous.n_actions == 0 and LR.n_actions == 3


def test_the_hold_action_is_the_scale_by_one() -> None:
    assert LR.hold_action() == 1
    scaling = DynamicParam(name="lr", actions=(0.5, 2.0), low=1e-3, high=1.0, interval=10)
    assert scaling.hold_action() is None
    assert (
        DynamicParam(
            interval=10, name="r", actions=(1.0, 2.0), mode="set", low=1.0, high=4
        ).hold_action()
        is None
    )
    assert DynamicParam(name="lr", low=1e-3, high=1.0, interval=10).hold_action() is None


@pytest.mark.parametrize(
    "param",
    [
        LR,
        DynamicParam(name="lr", low=1e-3, high=1.0, interval=3, initial=0.1),
        DynamicParam(name="r", actions=(4.0, 8.0), mode="set", low=1.0, log=False, interval=2),
    ],
)
def test_dict_round_trip(param: DynamicParam) -> None:
    data = json.loads(json.dumps(param.to_dict()))
    assert dynamic_param_from_dict(data) == param


def test_the_tracker_measures_progress_loss_and_slope() -> None:
    tracker = StateTracker(total_steps=100, window=10)
    first = tracker.state(0, 0.1, "lr")
    assert first.progress == 0 and math.isnan(first.loss) and first.loss_slope == 0.0
    assert math.isnan(first.grad_norm) and first.value == 0.1 and first.name == "lr"
    for step in range(1, 21):  # a loss falling by 0.01 per step
        tracker.observe(step, 10.0 - 0.01 * step, grad_norm=2.0, update_ratio=1e-3)
    state = tracker.state(20, 0.05)
    assert state.progress == pytest.approx(0.2)
    assert state.loss == pytest.approx(10.0 - 0.01 * 15.5)  # the mean of steps 11..20
    assert state.loss_slope == pytest.approx(-1.0)  # per 100 steps
    assert state.grad_norm == 2.0 and state.update_ratio == 1e-3
    assert tracker.state(500, 0.05).progress == 1.0
    # One interval only: the slope within it.
    short = StateTracker(total_steps=10, window=10)
    for step in (1, 2, 3):
        short.observe(step, 5.0 - step)
    assert short.state(3, 1.0).loss_slope == pytest.approx(-100.0)


def test_features_are_finite_with_missing_values() -> None:
    empty = DecisionState(step=0, progress=0.0)
    assert len(empty.features()) == len(FEATURES)
    assert empty.features() == [0.0] * len(FEATURES)
    state = DecisionState(
        step=5,
        progress=0.5,
        loss=math.inf,
        loss_slope=-1e9,
        grad_norm=100.0,
        update_ratio=-1.0,
        value=0.25,
    )
    assert state.features() == [0.5, 0.0, -10.0, pytest.approx(2.0), 0.0, pytest.approx(-2.0)]
    assert all(math.isfinite(x) for x in state.features())


def test_decision_round_trip_through_json() -> None:
    state = DecisionState(
        step=10, progress=0.1, loss=2.5, loss_slope=-0.3, value=1e-3, name="learning_rate"
    )
    decision = Decision(state=state, action=2, value=2e-3, log_prob=-0.7, reward=1.5)
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["state"]["grad_norm"] is None  # nan is stored as null
    back = Decision.from_dict(data)
    assert back.action == 2 and back.value == 2e-3 and back.log_prob == -0.7
    assert back.reward == 1.5 and back.state.to_dict() == state.to_dict()
    held = Decision.from_dict(Decision(state=state, action=None, value=1e-3).to_dict())
    assert held.action is None and held.log_prob is None and held.reward is None
