"""The schedules keep each parameter group's multiplier and match their reference."""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import get_wsd_schedule

from paretune import ConfigError
from paretune.spaces.schedules import WSDScheduler


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
