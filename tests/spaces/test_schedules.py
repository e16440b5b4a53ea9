"""The schedules keep each parameter group's multiplier and match their reference."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from transformers import get_wsd_schedule

from paretune import ConfigError
from paretune.spaces.schedules import PowerScheduler, WSDScheduler


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
