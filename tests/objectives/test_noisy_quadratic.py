"""noisy_quadratic: SGD on a noisy quadratic, with a static or a dynamic learning rate."""

from __future__ import annotations

import math

import pytest

from paretune import ConfigError
from paretune.objectives import TrialContext, build_objective
from paretune.objectives._noisy_quadratic import NoisyQuadratic
from paretune.search.dac import ScheduleDecider

DYNAMIC = {"actions": [0.5, 1.0, 2.0], "low": 0.01, "high": 1.0, "interval": 10}


def _run(objective: NoisyQuadratic, params: dict, decider: object = None) -> tuple:
    ctx = TrialContext(trial_number=0, seed=11)
    if decider is not None:
        ctx.set_decider(decider.build(ctx))  # type: ignore[attr-defined]
    return objective(params, ctx), ctx


def test_a_run_is_seeded_and_reports_four_times() -> None:
    objective = NoisyQuadratic(steps=40, dim=8)
    result, ctx = _run(objective, {"seed": 3})
    assert result["log10_loss"] == pytest.approx(math.log10(result["loss"]))
    assert [step for step, _ in ctx.history] == [10, 20, 30, 40]
    assert all(m["lr"] == 0.1 for _, m in ctx.history)
    assert _run(objective, {"seed": 3})[0] == result
    assert _run(objective, {"seed": 4})[0] != result
    # Without a seed, the trial's seed.
    assert _run(objective, {})[0] == _run(objective, {"seed": 11})[0]
    assert not ctx.decisions  # a static learning rate decides nothing


def test_a_smaller_noise_or_more_steps_lower_the_loss() -> None:
    base = _run(NoisyQuadratic(steps=100, dim=8), {"seed": 0})[0]["log10_loss"]
    assert _run(NoisyQuadratic(steps=100, dim=8, noise=0.0), {"seed": 0})[0]["log10_loss"] < base
    assert (
        _run(NoisyQuadratic(steps=2000, dim=8), {"seed": 0, "learning_rate": 0.01})[0]["log10_loss"]
        < _run(NoisyQuadratic(steps=20, dim=8), {"seed": 0, "learning_rate": 0.01})[0]["log10_loss"]
    )


def test_without_a_decider_the_dynamic_learning_rate_is_held() -> None:
    static = _run(NoisyQuadratic(steps=60, dim=8), {"seed": 1})
    held = _run(NoisyQuadratic(steps=60, dim=8, dynamic=DYNAMIC), {"seed": 1})
    assert held[0] == static[0]
    assert held[1].history == static[1].history
    trajectory = held[1].decisions
    assert [d.state.step for d in trajectory] == [0, 10, 20, 30, 40, 50]
    assert all(d.action is None and d.value == 0.1 for d in trajectory)
    assert trajectory[0].state.progress == 0 and math.isnan(trajectory[0].state.loss)
    assert all(math.isfinite(d.state.loss) for d in trajectory[1:])
    assert trajectory[3].state.progress == pytest.approx(0.5)


def test_a_schedule_sets_the_learning_rate() -> None:
    objective = NoisyQuadratic(steps=40, dim=8, dynamic=DYNAMIC)
    result, ctx = _run(objective, {"seed": 1}, ScheduleDecider((0, 20), (0.2, 0.05)))
    assert [m["lr"] for _, m in ctx.history] == [0.2, 0.2, 0.05, 0.05]
    assert [d.value for d in ctx.decisions] == [0.2, 0.2, 0.05, 0.05]
    assert [d.state.value for d in ctx.decisions] == [0.1, 0.2, 0.2, 0.05]
    assert result != _run(NoisyQuadratic(steps=40, dim=8), {"seed": 1})[0]
    initial = NoisyQuadratic(steps=40, dim=8, dynamic={**DYNAMIC, "initial": 0.3})
    _, ctx = _run(initial, {"seed": 1})
    assert all(m["lr"] == 0.3 for _, m in ctx.history)


def test_a_diverging_learning_rate_is_the_worst_loss_not_an_error() -> None:
    result, _ = _run(NoisyQuadratic(steps=50, dim=8), {"seed": 0, "learning_rate": 1e3})
    assert result["loss"] == 1e30 and result["log10_loss"] == 30


def test_it_is_registered() -> None:
    objective = build_objective("noisy_quadratic", {"steps": 10, "dynamic": DYNAMIC})
    assert isinstance(objective, NoisyQuadratic) and objective.dynamic is not None
    assert objective.dynamic.name == "learning_rate" and objective.dynamic.interval == 10
    assert [m.name for m in objective.metrics] == ["log10_loss"]


@pytest.mark.parametrize(
    ("settings", "path"),
    [
        ({"dim": 0}, ("dim",)),
        ({"steps": 1.5}, ("steps",)),
        ({"noise": -1.0}, ("noise",)),
        ({"learning_rate": 0}, ("learning_rate",)),
        ({"seed": "a"}, ("seed",)),
        ({"dim": True}, ("dim",)),
        ({"dynamic": {**DYNAMIC, "interval": 0}}, ("dynamic", "interval")),
        ({"dynamic": {**DYNAMIC, "speed": 2}}, ("dynamic", "speed")),
        ({"dynamic": {"actions": [1.0], "interval": 5}}, ("dynamic", "actions")),
        ({"dynamic": {"actions": [0.5, 2.0]}}, ("dynamic", "interval")),
        ({"dynamic": {"low": 0.5, "high": 0.1, "interval": 5}}, ("dynamic", "low")),
    ],
)
def test_bad_settings_name_the_setting(settings: dict, path: tuple) -> None:
    with pytest.raises(ConfigError) as info:
        NoisyQuadratic(**settings)
    assert info.value.path == path


def test_bad_parameters_name_the_setting() -> None:
    objective = NoisyQuadratic(steps=5)
    with pytest.raises(ConfigError) as info:
        _run(objective, {"momentum": 0.9})
    assert info.value.path == ("momentum",)
    with pytest.raises(ConfigError) as info:
        _run(objective, {"dim": -1})
    assert info.value.path == ("dim",)
