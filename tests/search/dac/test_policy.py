"""DAC policies: saving and loading (in a fresh process too), deciders, REINFORCE and PPO."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from paretune import ConfigError
from paretune.objectives import TrialContext
from paretune.search.dac import (
    Episode,
    Policy,
    PolicyDecider,
    PolicySnapshot,
    PolicyTrainer,
    ScheduleDecider,
    load_policy,
)
from paretune.spaces.dynamic import Decision, DecisionState, DynamicParam

ROOT = Path(__file__).resolve().parents[3]
LR = DynamicParam(name="learning_rate", actions=(0.5, 1.0, 2.0), low=1e-4, high=1.0, interval=5)
CONTINUOUS = DynamicParam(interval=10, name="learning_rate", low=1e-3, high=1.0)

STATES = [
    DecisionState(
        step=s, progress=s / 100, loss=3.0 - s / 50, loss_slope=-0.5, value=0.01 * (s + 1)
    )
    for s in range(0, 100, 10)
]


def _trained_policy(param: DynamicParam = LR, hidden: int = 8) -> Policy:
    """A policy with non-trivial weights and normalisation."""
    import torch

    policy = Policy(param, hidden=hidden, seed=3)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(3)
        for p in policy.net.parameters():
            p.copy_(3 * torch.randn(p.shape, generator=generator))
    policy.mean = np.linspace(0.1, 0.6, len(policy.features))
    policy.scale = np.linspace(1.0, 2.0, len(policy.features))
    policy.updates = 5
    return policy


def test_a_saved_policy_acts_the_same_in_a_fresh_process(tmp_path: Path) -> None:
    policy = _trained_policy()
    path = policy.save(tmp_path / "sub" / "policy.json")
    expected = [policy.act(s) for s in STATES]
    assert len({a for a, _, _ in expected}) > 1  # the states are told apart
    states = json.dumps([s.to_dict() for s in STATES])
    code = (
        "import json, sys\n"
        "from paretune.search.dac import load_policy\n"
        "from paretune.spaces.dynamic import DecisionState\n"
        "policy = load_policy(sys.argv[1])\n"
        "states = [DecisionState.from_dict(d) for d in json.loads(sys.argv[2])]\n"
        "print(json.dumps([list(policy.act(s)) for s in states]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), states],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    actions = json.loads(out.stdout.strip().splitlines()[-1])
    assert [tuple(a) for a in actions] == [tuple(a) for a in expected]
    assert load_policy(path).updates == 5


@pytest.mark.parametrize("param", [LR, CONTINUOUS])
def test_snapshot_round_trip(param: DynamicParam) -> None:
    policy = _trained_policy(param, hidden=0 if param is CONTINUOUS else 8)
    data = json.loads(json.dumps(policy.snapshot().to_dict()))
    back = Policy.from_snapshot(PolicySnapshot.from_dict(data))
    assert back.snapshot() == policy.snapshot()
    assert back.levels == policy.levels and back.param == param
    for state in STATES:
        np.testing.assert_array_equal(back.probabilities(state), policy.probabilities(state))
    assert load_policy(data).snapshot() == policy.snapshot()


def test_a_fresh_policy_mostly_holds_and_a_continuous_one_picks_levels() -> None:
    fresh = Policy(LR, hold_bias=2.0)
    p = fresh.probabilities(STATES[0])
    assert int(np.argmax(p)) == 1 and p[1] > 0.7
    assert fresh.act(STATES[0])[1] == STATES[0].value
    continuous = Policy(CONTINUOUS, levels=4)
    assert continuous.levels == pytest.approx((1e-3, 1e-2, 1e-1, 1.0))
    index, value, _ = continuous.act(STATES[3])
    assert value == continuous.levels[index]


def test_sampled_draws_are_keyed_by_seed_and_trial_number() -> None:
    snapshot = _trained_policy().snapshot()

    def actions(seed: int | None, trial: int, ctx_seed: int = 0) -> list[int | float | None]:
        ctx = TrialContext(trial_number=trial, seed=ctx_seed)
        ctx.set_decider(PolicyDecider(snapshot, seed=seed).build(ctx))
        assert ctx.has_decider
        for s in STATES * 3:
            ctx.decide(s)
        assert all(d.log_prob is not None and d.log_prob <= 0 for d in ctx.decisions)
        return [d.action for d in ctx.decisions]

    assert actions(7, 1) == actions(7, 1)
    assert actions(None, 1, ctx_seed=7) == actions(7, 1)
    assert actions(7, 1) != actions(7, 2)
    assert actions(7, 1) != actions(8, 1)
    greedy = PolicyDecider(snapshot, greedy=True).build(TrialContext(trial_number=0))
    assert [greedy(s).action for s in STATES] == [
        Policy.from_snapshot(snapshot).act(s)[0] for s in STATES
    ]


def test_without_a_decider_the_value_is_held() -> None:
    ctx = TrialContext(trial_number=0)
    assert not ctx.has_decider
    assert ctx.decide(STATES[2]) == STATES[2].value
    assert ctx.decisions[0].action is None and ctx.decisions[0].value == STATES[2].value
    ctx.set_decider(ScheduleDecider((0,), (0.5,)).build(ctx))
    assert ctx.decide(STATES[3]) == 0.5
    ctx.set_decider(None)
    assert ctx.decide(STATES[4]) == STATES[4].value and len(ctx.decisions) == 3


def test_a_schedule_replays_its_values() -> None:
    schedule = ScheduleDecider((0, 10, 30), (1.0, 0.5, 0.25))
    assert [schedule.value_at(s) for s in (-1, 0, 9, 10, 29, 30, 1000)] == [
        1.0,
        1.0,
        1.0,
        0.5,
        0.5,
        0.25,
        0.25,
    ]
    ctx = TrialContext(trial_number=0)
    ctx.set_decider(schedule.build(ctx))
    for state in STATES[:5]:
        ctx.decide(state)
    trajectory = [d.to_dict() for d in ctx.decisions]
    replayed = ScheduleDecider.from_trajectory(trajectory)
    assert replayed.steps == (0, 10, 20, 30, 40)
    assert replayed.values == (1.0, 0.5, 0.5, 0.25, 0.25)
    with pytest.raises(ConfigError):
        ScheduleDecider((0, 10), (1.0,))
    with pytest.raises(ConfigError):
        ScheduleDecider((), ())
    with pytest.raises(ConfigError):
        ScheduleDecider((0, 10, 10), (1.0, 2.0, 3.0))


def _episodes(policy: Policy, rng: np.random.Generator, n: int, rewarded: int) -> list[Episode]:
    """Episodes of 3 decisions sampled from ``policy``; the reward counts ``rewarded``."""
    out = []
    for _ in range(n):
        decisions = []
        for s in STATES[:3]:
            index, value, log_prob = policy.act(s, rng=rng)
            decisions.append(Decision(state=s, action=index, value=value, log_prob=log_prob))
        reward = float(sum(d.action == rewarded for d in decisions))
        out.append(Episode(tuple(decisions), reward, instance="0"))
    return out


@pytest.mark.parametrize("algorithm", ["reinforce", "ppo"])
def test_updates_raise_the_probability_of_a_rewarded_action(algorithm: str) -> None:
    param = DynamicParam(interval=10, name="x", actions=(0.5, 2.0), low=1e-3, high=10.0)
    policy = Policy(param, features=["progress"], hidden=0, seed=0)
    trainer = PolicyTrainer(policy, algorithm=algorithm, lr=0.1)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    before = np.mean([policy.probabilities(s)[1] for s in STATES[:3]])
    assert before == pytest.approx(0.5)
    for _ in range(15):
        stats = trainer.update(_episodes(policy, rng, 8, rewarded=1))
    after = np.mean([policy.probabilities(s)[1] for s in STATES[:3]])
    assert after > 0.8, (before, after)
    assert policy.updates == 15 and {"loss", "entropy", "reward", "episodes"} <= set(stats)
    assert set(trainer.state()["baselines"]) == {"0"}
    restored = PolicyTrainer(Policy(param), algorithm=algorithm)  # type: ignore[arg-type]
    restored.restore(json.loads(json.dumps(trainer.state())))
    assert restored.baselines == trainer.baselines


def test_an_update_without_decisions_is_a_no_op_and_needs_action_indices() -> None:
    policy = Policy(LR)
    trainer = PolicyTrainer(policy)
    assert trainer.update([Episode((), 1.0)]) == {}
    assert policy.updates == 0
    held = Decision(state=STATES[0], action=None, value=0.1)
    with pytest.raises(ValueError, match="action"):
        trainer.update([Episode((held,), 1.0)])


@pytest.mark.parametrize(
    "options",
    [
        {"algorithm": "sarsa"},
        {"lr": 0.0},
        {"entropy": -1.0},
        {"baseline_decay": 1.0},
        {"epochs": 0},
        {"clip": 0.0},
    ],
)
def test_bad_trainer_options_raise(options: dict) -> None:
    with pytest.raises(ConfigError):
        PolicyTrainer(Policy(LR), **options)


@pytest.mark.parametrize(
    "options",
    [{"features": ["progress", "temperature"]}, {"features": []}, {"hidden": -1}],
)
def test_bad_policy_options_raise(options: dict) -> None:
    with pytest.raises(ConfigError) as info:
        Policy(LR, **options)
    assert info.value.path[0] == "policy"
    with pytest.raises(ConfigError) as info:
        Policy(CONTINUOUS, levels=1)
    assert info.value.path == ("policy", "levels")


def test_load_policy_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="not a saved policy"):
        load_policy(broken)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something/1", "weights": {}}))
    with pytest.raises(ConfigError, match="not a saved paretune policy"):
        load_policy(other)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="not a saved paretune policy"):
        load_policy(listed)
