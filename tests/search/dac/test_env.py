"""ObjectiveEnv (an objective that calls ctx.decide as a gymnasium env) and train_on_env."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import traceback
import warnings

import numpy as np
import pytest

gymnasium = pytest.importorskip("gymnasium")

from gymnasium.error import ResetNeeded  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402

from paretune._errors import ConfigError  # noqa: E402
from paretune.objectives import Metric, NoisyQuadratic, TrialContext  # noqa: E402
from paretune.search.dac import (  # noqa: E402
    ObjectiveEnv,
    Policy,
    PolicyTrainer,
    ScheduleDecider,
    train_on_env,
)
from paretune.search.dac._env_train import run_episode  # noqa: E402
from paretune.spaces.dynamic import DynamicParam, StateTracker  # noqa: E402

CONTINUOUS = {"low": 0.0125, "high": 1.6, "interval": 10}
DISCRETE = {"actions": [0.5, 1.0, 2.0], "low": 1e-3, "high": 1.6, "interval": 10}


def _objective(dynamic: dict, steps: int = 100) -> NoisyQuadratic:
    return NoisyQuadratic(steps=steps, dynamic=dynamic)


def _env(dynamic: dict = CONTINUOUS, seeds=range(4), **kwargs) -> ObjectiveEnv:
    objective = _objective(dynamic)
    assert objective.dynamic is not None
    return ObjectiveEnv(objective, objective.dynamic, [{"seed": s} for s in seeds], **kwargs)


def _episode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("paretune-objective-env")]


@pytest.mark.parametrize("dynamic", [CONTINUOUS, DISCRETE], ids=["continuous", "discrete"])
def test_check_env_passes(dynamic):
    env = _env(dynamic, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    env.close()
    # gymnasium recommends a [-1, 1] Box; ours is the log learning rate's range (documented).
    others = [str(w.message) for w in caught if "symmetric and normalized" not in str(w.message)]
    assert others == []
    if dynamic is DISCRETE:
        assert env.action_space == gymnasium.spaces.Discrete(3)
    else:
        assert env.action_space.shape == (1,)
        np.testing.assert_allclose(env.action_space.low, [np.log(0.0125)], rtol=1e-6)
    assert _episode_threads() == []


@pytest.mark.parametrize("dynamic", [CONTINUOUS, DISCRETE], ids=["continuous", "discrete"])
def test_episode_equals_the_objective_replaying_its_values(dynamic):
    env = _env(dynamic, seed=0)
    env.action_space.seed(5)
    obs, info = env.reset(seed=3, options={"instance": 2})
    assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape
    assert info["state"]["step"] == 0 and info["params"] == {"seed": 2}
    steps, values, rewards = [], [], []
    while True:
        steps.append(info["state"]["step"])
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        values.append(info["value"])
        rewards.append(reward)
        assert not truncated
        if terminated:
            break
    assert len(values) == 10 and rewards[:-1] == [0.0] * 9
    assert len(set(values)) >= 2  # the actions did change the learning rate
    assert env.context is not None
    assert [d.value for d in env.context.decisions] == values

    replay = TrialContext(trial_number=0)
    replay.set_decider(ScheduleDecider(tuple(steps), tuple(values)).build(replay))
    result = env.objective({"seed": 2}, replay)
    assert rewards[-1] == -result["log10_loss"]
    assert info["metrics"]["log10_loss"] == result["log10_loss"]


def test_close_mid_episode_stops_the_objective_thread():
    env = _env()
    env.reset(seed=0)
    env.step(env.action_for(0.1))
    assert len(_episode_threads()) == 1
    env.close()
    assert _episode_threads() == []
    with pytest.raises(ResetNeeded):
        env.step(env.action_for(0.1))
    env.close()  # twice is fine
    env.reset(seed=0)  # and the env can start again
    env.reset(seed=1)  # a reset mid-episode stops the running one
    assert len(_episode_threads()) == 1
    env.close()
    assert _episode_threads() == []


def test_close_unwinds_an_objective_that_catches_exceptions():
    param = DynamicParam(name="lr", low=0.01, high=1.0, interval=1)
    unwound = []

    def stubborn(params, ctx):
        value = 0.1
        try:
            for step in range(100):
                # A user's broad handler must not keep the run alive.
                with contextlib.suppress(Exception):
                    value = ctx.decide(StateTracker(100).state(step, value, "lr"))
            return {"loss": value}
        finally:
            unwound.append(True)

    env = ObjectiveEnv(stubborn, param, [{}], metric=Metric("loss", "minimize"))
    env.reset(seed=0)
    env.step(env.action_for(0.5))
    env.close()
    assert unwound == [True] and _episode_threads() == []


def _failing(params, ctx):
    value = 0.1
    for step in range(10):
        if step == 3:
            raise RuntimeError(f"the objective failed at step {step}")
        value = ctx.decide(StateTracker(10).state(step, value, "lr"))
    return {"loss": value}


def test_an_error_in_the_objective_surfaces_with_its_traceback():
    param = DynamicParam(name="lr", low=0.01, high=1.0, interval=1)
    env = ObjectiveEnv(_failing, param, [{}], metric=Metric("loss", "minimize"))
    env.reset(seed=0)
    env.step(env.action_for(0.2))
    env.step(env.action_for(0.2))
    with pytest.raises(RuntimeError, match="failed at step 3") as excinfo:
        env.step(env.action_for(0.2))
    assert "_failing" in [frame.name for frame in traceback.extract_tb(excinfo.tb)]
    assert _episode_threads() == []
    with pytest.raises(ResetNeeded):
        env.step(env.action_for(0.2))


def test_an_objective_without_decisions_terminates_on_the_first_step():
    objective = NoisyQuadratic(steps=20)  # no dynamic parameter: it never decides
    param = DynamicParam(interval=10, name="learning_rate", low=0.01, high=1.0)
    env = ObjectiveEnv(objective, param, [{"seed": 0}])
    obs, info = env.reset(seed=0)
    assert info["state"] is None and obs.shape == (6,)
    _, reward, terminated, _, info = env.step(env.action_for(0.1))
    expected = objective({"seed": 0}, TrialContext(trial_number=0))["log10_loss"]
    assert terminated and reward == -expected and info["metrics"]["log10_loss"] == expected


def test_invalid_arguments_are_config_errors():
    objective = _objective(CONTINUOUS)
    param = objective.dynamic
    with pytest.raises(ConfigError, match="not among the objective's metrics"):
        ObjectiveEnv(objective, param, [{}], metric="accuracy")
    with pytest.raises(ConfigError, match="non-empty"):
        ObjectiveEnv(objective, param, [])
    with pytest.raises(ConfigError, match="reward must be one of"):
        ObjectiveEnv(objective, param, [{}], reward="dense")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="declares no metrics"):
        ObjectiveEnv(_failing, param, [{}])
    env = ObjectiveEnv(objective, param, [{"seed": 0}])
    with pytest.raises(ConfigError, match=r"index of the 1 instances"):
        env.reset(options={"instance": 1})
    policy = Policy(
        DynamicParam(interval=10, name="learning_rate", low=0.1, high=1.0), features=["progress"]
    )
    with pytest.raises(ConfigError, match="the env decides"):
        train_on_env(env, policy, PolicyTrainer(policy), episodes=1, batch=1)


def test_train_on_env_improves_the_policy():
    # Measured (seed 0): the untrained greedy policy (the smallest rate, 0.0125) reaches a
    # mean held-out log10 loss of 0.061, the trained one -0.728 after 12 PPO updates of 8
    # episodes (seeds 1 and 2 of the policy and draws: -0.327, -0.434). About 3 s.
    objective = _objective(CONTINUOUS)
    assert objective.dynamic is not None
    train = ObjectiveEnv(objective, objective.dynamic, [{"seed": s} for s in range(8)], seed=0)
    held_out = ObjectiveEnv(objective, objective.dynamic, [{"seed": s} for s in range(100, 116)])

    def held_out_loss(policy: Policy) -> float:
        return float(
            np.mean([-run_episode(held_out, policy, instance=i).reward for i in range(16)])
        )

    policy = Policy(objective.dynamic, hidden=16, features=["progress"], levels=8, seed=0)
    trainer = PolicyTrainer(policy, algorithm="ppo", lr=0.05, entropy=0.01)
    before = held_out_loss(policy)
    stats = train_on_env(
        train, policy, trainer, episodes=96, batch=8, instances=list(range(8)), seed=0
    )
    after = held_out_loss(policy)
    assert [s["update"] for s in stats] == list(range(1, 13))
    assert stats[-1]["episodes_done"] == 96
    assert after < before - 0.3, (before, after)
    assert _episode_threads() == []


def test_train_on_env_takes_a_foreign_env_through_adapters():
    """A toy env with its own observations: to_state and the default Discrete action."""

    class Toy(gymnasium.Env):
        observation_space = gymnasium.spaces.Box(0.0, 1.0, shape=(1,))
        action_space = gymnasium.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return np.zeros(1, dtype=np.float32), {"instance": "toy"}

        def step(self, action):
            self.t += 1
            reward = 1.0 if action == 1 else 0.0
            return np.array([self.t / 4], dtype=np.float32), reward, self.t == 4, False, {}

    param = DynamicParam(
        name="choice", actions=(0.0, 1.0), mode="set", low=0.0, high=1.0, log=False, interval=1
    )
    from paretune.spaces.dynamic import DecisionState

    def to_state(obs, info, env):
        return DecisionState(step=env.t, progress=float(obs[0]), value=0.0)

    policy = Policy(param, hidden=0, features=["progress"], seed=0)
    trainer = PolicyTrainer(policy, algorithm="reinforce", lr=0.2)
    stats = train_on_env(Toy(), policy, trainer, episodes=60, batch=6, to_state=to_state, seed=1)
    assert len(stats) == 10 and stats[-1]["reward"] > stats[0]["reward"]
    greedy = run_episode(Toy(), policy, to_state=to_state)
    assert greedy.reward == 4.0 and greedy.instance == "toy"


def test_importing_dac_loads_neither_gymnasium_nor_torch_and_names_the_extra():
    code = (
        "import sys, paretune.search.dac; "
        "print(' '.join(m for m in ('gymnasium', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    missing = (
        "import sys; sys.modules['gymnasium'] = None\n"
        "try:\n    from paretune.search.dac import ObjectiveEnv\n"
        "except ImportError as err:\n    print(err)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", missing], capture_output=True, text=True, check=True
    )
    assert "pip install 'paretune[rl]'" in out.stdout
