"""The schedules keep each parameter group's multiplier and match their reference."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from pydantic import ValidationError
from transformers import get_wsd_schedule

from paretune import ConfigError
from paretune._validation import StrictModel, config_error
from paretune.spaces.schedules import (
    ConstantSchedule,
    CosineSchedule,
    PowerSchedule,
    PowerScheduler,
    Schedule,
    WSDSchedule,
    WSDScheduler,
    schedule_from_dict,
)


def _optimizer() -> torch.optim.Optimizer:
    # Two groups: lr 1.0 follows the schedule exactly, lr 0.25 is a muP-style multiplier.
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    return torch.optim.AdamW([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.25}])


def _lrs(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> list[float]:
    """Both groups' learning rates at each step, flat: [a0, b0, a1, b1, ...]."""
    out: list[float] = []
    for _ in range(steps):
        out.extend(g["lr"] for g in scheduler.optimizer.param_groups)
        scheduler.optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize(
    ("warmup_steps", "stable_steps", "decay_steps", "decay", "warmup", "min_lr_ratio"),
    [
        *itertools.product(
            [0, 7], [0, 11], [1, 13], ["linear", "cosine", "1-sqrt"], ["linear"], [0.0]
        ),
        (5, 10, 20, "cosine", "cosine", 0.1),
        (5, 10, 20, "1-sqrt", "1-sqrt", 0.3),
        (3, 0, 4, "linear", "linear", 1.0),
    ],
)
def test_wsd_equals_transformers_at_every_step_with_each_groups_multiplier(
    warmup_steps: int,
    stable_steps: int,
    decay_steps: int,
    decay: str,
    warmup: str,
    min_lr_ratio: float,
) -> None:
    total = warmup_steps + stable_steps + decay_steps + 5  # past the end too
    ours = WSDScheduler(
        _optimizer(),
        warmup_steps=warmup_steps,
        stable_steps=stable_steps,
        decay_steps=decay_steps,
        decay=decay,  # type: ignore[arg-type]
        warmup=warmup,  # type: ignore[arg-type]
        min_lr_ratio=min_lr_ratio,
    )
    reference = get_wsd_schedule(
        _optimizer(),
        num_warmup_steps=warmup_steps,
        num_decay_steps=decay_steps,
        num_stable_steps=stable_steps,
        warmup_type=warmup,
        decay_type=decay,
        min_lr_ratio=min_lr_ratio,
    )
    got, expected = _lrs(ours, total), _lrs(reference, total)
    assert got == pytest.approx(expected, abs=1e-12)
    assert got[1::2] == pytest.approx([0.25 * a for a in got[::2]])  # the multiplier survives


def test_a_resumed_schedule_continues_where_it_stopped() -> None:
    settings = {"warmup_steps": 4, "stable_steps": 6, "decay_steps": 10, "decay": "cosine"}
    whole = _lrs(WSDScheduler(_optimizer(), **settings), 20)  # type: ignore[arg-type]

    first = WSDScheduler(_optimizer(), **settings)  # type: ignore[arg-type]
    head = _lrs(first, 9)
    # torch's order for a checkpoint: build both, then load the optimizer, then the schedule.
    optimizer = _optimizer()
    second = WSDScheduler(optimizer, **settings)  # type: ignore[arg-type]
    optimizer.load_state_dict(first.optimizer.state_dict())
    second.load_state_dict(first.state_dict())
    assert head + _lrs(second, 11) == pytest.approx(whole)


@pytest.mark.parametrize(
    ("settings", "path"),
    [
        ({"warmup_steps": -1}, ("warmup_steps",)),
        ({"stable_steps": 2.5}, ("stable_steps",)),
        ({"decay": "exponential"}, ("decay",)),
        ({"warmup": "step"}, ("warmup",)),
        ({"min_lr_ratio": 1.5}, ("min_lr_ratio",)),
    ],
)
def test_bad_settings_name_the_setting(settings: dict, path: tuple) -> None:
    base = {"warmup_steps": 1, "stable_steps": 1, "decay_steps": 1}
    with pytest.raises(ConfigError) as info:
        WSDScheduler(_optimizer(), **{**base, **settings})
    assert info.value.path == path


# The paper's setting at a small scale: 16 sequences of 4096 tokens a step. The power phase
# starts at lr_max and leaves it near step 113, where 16 * 4 * n ** -0.51 falls below 0.02.
_POWER = {"batch_size": 16, "tokens_per_step": 16 * 4096}


def _power_formula(step: int, *, a: float = 4.0, b: float = -0.51, lr_max: float = 0.02) -> float:
    """Equation 7 of arXiv 2408.13359, written out again: min(lr_max, batch * a * n ** b)."""
    return min(lr_max, 16 * a * (step * 16 * 4096) ** b)


@pytest.mark.parametrize(("a", "b", "lr_max"), [(4.0, -0.51, 0.02), (3.0, -0.55, 0.01)])
def test_power_equals_its_formula_after_the_warmup_with_each_groups_multiplier(
    a: float, b: float, lr_max: float
) -> None:
    warmup = 10
    scheduler = PowerScheduler(_optimizer(), **_POWER, a=a, b=b, lr_max=lr_max, warmup_steps=warmup)
    got = _lrs(scheduler, 400)
    expected = [_power_formula(s, a=a, b=b, lr_max=lr_max) for s in range(warmup, 400)]
    assert got[2 * warmup :: 2] == pytest.approx(expected, rel=1e-12, abs=0)
    assert got[1::2] == pytest.approx([0.25 * x for x in got[::2]], rel=1e-12, abs=0)
    # Both regimes are covered: the bound, then the power law below it.
    assert got[2 * warmup] == lr_max
    assert got[-2] < 0.6 * lr_max


def test_power_warmup_is_a_line_from_zero_to_where_the_power_phase_starts() -> None:
    scheduler = PowerScheduler(_optimizer(), **_POWER, lr_max=1.0, warmup_steps=200)
    top = _power_formula(200, lr_max=1.0)
    assert top < 1.0  # below the bound, so the line does not end at lr_max
    for step in (0, 1, 50, 199):
        assert scheduler.factor(step) == pytest.approx(step / 200 * top, rel=1e-12, abs=0)
    assert scheduler.factor(200) == pytest.approx(top, rel=1e-12)
    assert scheduler.factor(201) == pytest.approx(_power_formula(201, lr_max=1.0), rel=1e-12)


def test_power_without_warmup_starts_at_lr_max() -> None:
    # n = 0 tokens: n ** b is infinite, and the bound is the formula's limit.
    scheduler = PowerScheduler(_optimizer(), **_POWER, warmup_steps=0)
    assert [g["lr"] for g in scheduler.optimizer.param_groups] == [0.02, 0.25 * 0.02]


def test_power_decays_exponentially_to_zero_over_the_last_steps() -> None:
    total, decay = 400, 100
    scheduler = PowerScheduler(
        _optimizer(), **_POWER, warmup_steps=10, decay_steps=decay, total_steps=total
    )
    start = _power_formula(total - decay)
    for step in (200, 300):  # the power phase runs up to the decay's start
        assert scheduler.factor(step) == pytest.approx(_power_formula(step), rel=1e-12)
    for step in (301, 350, 399):
        shape = (math.exp(1 - (step - 300) / decay) - 1) / (math.e - 1)
        assert scheduler.factor(step) == pytest.approx(shape * start, rel=1e-12)
    assert scheduler.factor(350) == pytest.approx(start * (math.exp(0.5) - 1) / (math.e - 1))
    assert scheduler.factor(400) == 0.0
    assert scheduler.factor(450) == 0.0
    got = _lrs(scheduler, total + 3)
    assert all(later < earlier for earlier, later in itertools.pairwise(got[600:800:2]))
    assert got[1::2] == pytest.approx([0.25 * x for x in got[::2]], rel=1e-12, abs=0)


def test_a_resumed_power_schedule_continues_where_it_stopped() -> None:
    settings = {**_POWER, "warmup_steps": 5, "decay_steps": 20, "total_steps": 150}
    whole = _lrs(PowerScheduler(_optimizer(), **settings), 160)

    first = PowerScheduler(_optimizer(), **settings)
    head = _lrs(first, 137)  # inside the decay
    optimizer = _optimizer()
    second = PowerScheduler(optimizer, **settings)
    optimizer.load_state_dict(first.optimizer.state_dict())
    second.load_state_dict(first.state_dict())
    assert head + _lrs(second, 23) == pytest.approx(whole, rel=1e-12, abs=0)


@pytest.mark.parametrize(
    ("settings", "path"),
    [
        ({"batch_size": 0}, ("batch_size",)),
        ({"batch_size": 16.0}, ("batch_size",)),
        ({"tokens_per_step": -1}, ("tokens_per_step",)),
        ({"a": 0.0}, ("a",)),
        ({"a": math.inf}, ("a",)),
        ({"b": 0.51}, ("b",)),
        ({"b": "x"}, ("b",)),
        ({"lr_max": -0.02}, ("lr_max",)),
        ({"lr_max": math.nan}, ("lr_max",)),
        ({"warmup_steps": -1}, ("warmup_steps",)),
        ({"decay_steps": 2.5, "total_steps": 10}, ("decay_steps",)),
        ({"decay_steps": 5}, ("total_steps",)),  # a decay needs the end of the run
        ({"total_steps": True}, ("total_steps",)),
        ({"warmup_steps": 11, "total_steps": 10}, ("warmup_steps",)),
        ({"warmup_steps": 6, "decay_steps": 5, "total_steps": 10}, ("decay_steps",)),
    ],
)
def test_bad_power_settings_name_the_setting(settings: dict, path: tuple) -> None:
    with pytest.raises(ConfigError) as info:
        PowerScheduler(_optimizer(), **{**_POWER, "warmup_steps": 1, **settings})
    assert info.value.path == path


def test_a_wsd_spec_builds_the_scheduler_it_describes() -> None:
    spec = {"type": "wsd", "warmup_fraction": 0.07, "decay_fraction": 0.29}
    schedule = schedule_from_dict({**spec, "decay_shape": "cosine", "min_lr_ratio": 0.1})
    assert isinstance(schedule, WSDSchedule)
    built = schedule.build(_optimizer(), total_steps=100, batch_size=8, tokens_per_step=1024)
    # 7 and 29 steps exactly, though 0.07 * 100 and 0.29 * 100 are not 7 and 29 in floats.
    assert (built.warmup_steps, built.stable_steps, built.decay_steps) == (7, 64, 29)
    reference = WSDScheduler(
        _optimizer(),
        warmup_steps=7,
        stable_steps=64,
        decay_steps=29,
        decay="cosine",
        min_lr_ratio=0.1,
    )
    assert _lrs(built, 105) == pytest.approx(_lrs(reference, 105), rel=1e-12, abs=0)


def test_a_power_spec_builds_the_scheduler_it_describes() -> None:
    spec = {"type": "power", "a": 3, "b": -0.5, "lr_max": 0.01, "warmup_steps": 10}
    schedule = schedule_from_dict({**spec, "decay_fraction": 0.25})
    assert isinstance(schedule, PowerSchedule)
    built = schedule.build(_optimizer(), total_steps=200, **_POWER)
    reference = PowerScheduler(
        _optimizer(),
        **_POWER,
        a=3.0,
        b=-0.5,
        lr_max=0.01,
        warmup_steps=10,
        decay_steps=50,
        total_steps=200,
    )
    assert _lrs(built, 203) == pytest.approx(_lrs(reference, 203), rel=1e-12, abs=0)


def test_a_constant_spec_warms_up_then_holds() -> None:
    schedule = schedule_from_dict({"type": "constant", "warmup_steps": 4})
    assert isinstance(schedule, ConstantSchedule)
    built = schedule.build(_optimizer(), total_steps=10, batch_size=8, tokens_per_step=1024)
    assert _lrs(built, 10)[::2] == pytest.approx([0, 0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1])


@pytest.mark.parametrize("min_lr_ratio", [0.0, 0.1])
def test_a_cosine_spec_warms_up_then_falls_along_half_a_cosine(min_lr_ratio: float) -> None:
    schedule = schedule_from_dict(
        {"type": "cosine", "warmup_steps": 4, "min_lr_ratio": min_lr_ratio}
    )
    assert isinstance(schedule, CosineSchedule)
    built = schedule.build(_optimizer(), total_steps=20, batch_size=8, tokens_per_step=1024)
    low = min_lr_ratio
    # The formula itself: a line from low to 1 over 4 steps, then half a cosine over 16.
    expected = [low + (1 - low) * s / 4 for s in range(4)] + [
        low + (1 - low) * 0.5 * (1 + math.cos(math.pi * s / 16)) for s in range(16)
    ]
    lrs = _lrs(built, 22)
    assert lrs[0::2] == pytest.approx([*expected, low, low], rel=1e-12, abs=1e-15)
    assert lrs[1::2] == pytest.approx([0.25 * x for x in [*expected, low, low]], abs=1e-15)
    # The default: 5 % warmup (rounded up) and a decay to 0 at the run's end.
    default = schedule_from_dict({"type": "cosine"}).build(
        _optimizer(), total_steps=100, batch_size=8, tokens_per_step=1024
    )
    assert (default.warmup_steps, default.stable_steps, default.decay_steps) == (5, 0, 95)
    assert _lrs(default, 101)[-2] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("spec", "lengths"),
    [
        ({"type": "wsd"}, (5, 10)),  # 5% warmup, 10% decay
        ({"type": "power"}, (5, 0)),  # 5% warmup, no decay
        ({"type": "constant"}, (5, 0)),
        ({"type": "constant", "warmup_fraction": 0}, (0, 0)),
        ({"type": "wsd", "warmup_fraction": 0.013, "decay_fraction": 0.013}, (2, 1)),  # up, down
    ],
)
def test_spec_defaults_and_rounding_of_fractions(spec: dict, lengths: tuple) -> None:
    built = schedule_from_dict(spec).build(
        _optimizer(), total_steps=100, batch_size=16, tokens_per_step=65536
    )
    assert (built.warmup_steps, built.decay_steps) == lengths


@pytest.mark.parametrize("total", [7, 10, 13, 101])
def test_fractions_that_sum_to_one_fit_any_run(total: int) -> None:
    schedule = schedule_from_dict({"type": "wsd", "warmup_fraction": 0.3, "decay_fraction": 0.7})
    built = schedule.build(_optimizer(), total_steps=total, batch_size=1, tokens_per_step=1)
    assert isinstance(built, WSDScheduler)
    assert built.warmup_steps + built.stable_steps + built.decay_steps == total


def test_a_settings_model_holds_a_schedule_by_its_type() -> None:
    class Settings(StrictModel):
        schedule: Schedule = WSDSchedule()

    settings = Settings.model_validate({"schedule": {"type": "power", "decay_steps": 3}})
    assert settings.schedule == PowerSchedule(decay_steps=3)
    assert Settings().schedule.type == "wsd"
    assert "discriminator" in Settings.model_json_schema()["properties"]["schedule"]
    # Errors are located below the field, as schedule_from_dict locates them (not at
    # schedule.power.a, where pydantic puts a union's tag).
    for bad, path in [({"type": "power", "a": -1}, "a"), ({"type": "nope"}, "type")]:
        with pytest.raises(ValidationError) as info:
            Settings.model_validate({"schedule": bad})
        assert config_error(info.value).path == ("schedule", path)


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ([("type", "wsd")], ()),
        ({}, ("type",)),
        ({"type": "exponential"}, ("type",)),
        ({"type": "cosine", "decay_fraction": 0.1}, ("decay_fraction",)),
        ({"type": "cosine", "min_lr_ratio": -0.1}, ("min_lr_ratio",)),
        ({"type": ["wsd"]}, ("type",)),
        ({"type": "wsd", "warmup": 0.1}, ("warmup",)),
        ({"type": "constant", "decay_fraction": 0.1}, ("decay_fraction",)),
        ({"type": "wsd", "warmup_fraction": 1.0}, ("warmup_fraction",)),
        ({"type": "wsd", "warmup_fraction": "0.1"}, ("warmup_fraction",)),
        ({"type": "power", "decay_fraction": -0.1}, ("decay_fraction",)),
        ({"type": "wsd", "warmup_steps": 5.0}, ("warmup_steps",)),
        ({"type": "wsd", "warmup_fraction": 0.1, "warmup_steps": 5}, ("warmup_steps",)),
        ({"type": "power", "decay_fraction": 0.1, "decay_steps": 5}, ("decay_steps",)),
        ({"type": "wsd", "warmup_fraction": 0.6, "decay_fraction": 0.5}, ("decay_fraction",)),
        ({"type": "wsd", "decay_shape": "exponential"}, ("decay_shape",)),
        ({"type": "wsd", "min_lr_ratio": 2}, ("min_lr_ratio",)),
        ({"type": "power", "a": 0}, ("a",)),
        ({"type": "power", "b": 0.51}, ("b",)),
        ({"type": "power", "lr_max": math.inf}, ("lr_max",)),
    ],
)
def test_bad_specs_name_the_key(spec: object, path: tuple) -> None:
    with pytest.raises(ConfigError) as info:
        schedule_from_dict(spec)  # type: ignore[arg-type]
    assert info.value.path == path


@pytest.mark.parametrize(
    ("spec", "total", "path"),
    [
        ({"type": "wsd", "warmup_steps": 60, "decay_steps": 50}, 100, ("decay_steps",)),
        ({"type": "wsd", "warmup_steps": 20, "decay_fraction": 0.9}, 100, ("decay_fraction",)),
        ({"type": "power", "warmup_steps": 101}, 100, ("warmup_steps",)),
        ({"type": "constant", "warmup_steps": 11}, 10, ("warmup_steps",)),
        ({"type": "cosine", "warmup_steps": 11}, 10, ("warmup_steps",)),
        ({"type": "constant"}, 0, ("total_steps",)),
    ],
)
def test_a_warmup_and_decay_longer_than_the_run_name_the_length(
    spec: dict, total: int, path: tuple
) -> None:
    with pytest.raises(ConfigError) as info:
        schedule_from_dict(spec).build(
            _optimizer(), total_steps=total, batch_size=16, tokens_per_step=65536
        )
    assert info.value.path == path
