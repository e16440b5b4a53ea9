"""ReinforceSampler: paretune's and Optuna's sampler suites, and what a user relies on."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    MultiObjectiveSamplerTestCase,
    RelativeSamplerTestCase,
)
from optuna.trial import TrialState

from paretune import ConfigError
from paretune.search import ReinforceSampler, controller_capabilities, run_search
from paretune.search._reinforce.learner import Learner, Settings
from paretune.search._reinforce.levels import Levels
from paretune.search._reinforce.policy import Policy
from paretune.search._reinforce.rewards import HypervolumeReward, MnasReward, make_reward
from paretune.spaces import Categorical, Condition, Float, Int, SearchSpace
from paretune.spec import load_spec
from paretune.testing import ControllerConformance

# -- the suites ------------------------------------------------------------------------------


class TestReinforceConformance(ControllerConformance):
    @pytest.fixture
    def controller(self) -> str:
        return "reinforce"

    @pytest.fixture
    def controller_options(self) -> dict[str, Any]:
        return {"n_startup_trials": 3}


class TestOptunaSamplerSuites(
    BasicSamplerTestCase, RelativeSamplerTestCase, MultiObjectiveSamplerTestCase
):
    """Optuna's own suites: the sampler built without a paretune space, on plain Optuna
    distributions, as a plain Optuna sampler."""

    @pytest.fixture
    def sampler(self) -> Any:
        return lambda: ReinforceSampler(seed=0, n_startup_trials=1)


def test_capabilities_are_registered_from_the_class():
    declared = controller_capabilities("reinforce")
    assert declared is ReinforceSampler.capabilities
    assert declared.keyed_by_trial and declared.constraints and declared.conditional
    assert not declared.pending and not declared.no_duplicates


# -- levels ----------------------------------------------------------------------------------


def test_levels_of_each_parameter_type():
    assert Levels.of(Categorical("c", choices=("a", 3, None)), bins=2).values == ("a", 3, None)
    assert Levels.of(Int("n", low=0, high=5), bins=8).values == (0, 1, 2, 3, 4, 5)
    assert Levels.of(Int("n", low=0, high=100, step=10), bins=3).values == (0, 50, 100)
    wide = Levels.of(Int("w", low=1, high=64, log=True), bins=8).values
    assert wide == (1, 2, 3, 6, 11, 20, 35, 64)  # log-spaced, rounded
    assert Levels.of(Int("w", low=1, high=4, log=True), bins=8).values == (1, 2, 3, 4)
    assert Levels.of(Float("s", low=0.0, high=1.0, step=0.25), bins=8).values == (
        0.0, 0.25, 0.5, 0.75, 1.0,
    )  # fmt: skip
    stepped = Levels.of(Float("s", low=0.0, high=1.0, step=0.1), bins=3).values
    assert stepped == (0.0, 0.5, 1.0)
    logs = Levels.of(Float("lr", low=1e-4, high=1.0, log=True), bins=5).values
    assert logs[0] == 1e-4 and logs[-1] == 1.0
    np.testing.assert_allclose(logs, [1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    assert Levels.of(Float("x", low=2.0, high=2.0), bins=8).values == (2.0,)
    assert all(type(v) is float for v in logs) and all(type(v) is int for v in wide)


def test_a_trial_value_counts_as_its_nearest_level_or_not_at_all():
    levels = Levels.of(Float("lr", low=1e-4, high=1.0, log=True), bins=5)
    assert levels.index(3e-3) == 1  # log10: -2.52 is nearer -3 than -2
    assert levels.index(4e-3) == 2
    assert levels.index(2.0) is None  # outside the range (the space changed)
    assert Levels.of(Categorical("c", choices=("a", "b")), bins=2).index("z") is None


# -- learning --------------------------------------------------------------------------------

_DISCRETE = SearchSpace(
    [
        Categorical("a", choices=("x", "y", "z")),
        Categorical("b", choices=(1, 2, 3, 4)),
        Int("c", low=0, high=4),
    ]
)
_BEST = {"a": "z", "b": 3, "c": 1}


def _mismatches(params: dict[str, Any]) -> float:
    return float(sum(params[k] != v for k, v in _BEST.items()))


def _run(sampler: ReinforceSampler, space: SearchSpace, n: int, study: Any = None) -> Any:
    study = study or optuna.create_study(sampler=sampler)
    for _ in range(n):
        trial = study.ask()
        params = space.suggest(trial)
        study.tell(trial, _mismatches(params))
    return study


def _probability(policy: Policy, params: dict[str, Any]) -> float:
    out = 1.0
    for name, value in params.items():
        k = policy.levels[name].index(value)
        assert k is not None
        out *= float(policy.probabilities(name)[k])
    return out


def test_the_policy_concentrates_on_the_optimum_of_a_small_discrete_problem():
    sampler = ReinforceSampler(search_space=_DISCRETE, seed=0, n_startup_trials=5)
    study = _run(sampler, _DISCRETE, 60)
    policy = sampler.policy(study)
    uniform = 1 / 60
    p = _probability(policy, _BEST)
    # Measured 0.60-0.80 over seeds 0-5 after 60 trials (0.017 when uniform).
    assert p > 0.4 > 10 * uniform
    # Each factor's mode is the optimum's level.
    for name, value in _BEST.items():
        assert policy.levels[name].values[int(np.argmax(policy.probabilities(name)))] == value
    # Deterministic: the same seed gives the same trials and the same policy.
    again = ReinforceSampler(search_space=_DISCRETE, seed=0, n_startup_trials=5)
    assert [t.params for t in _run(again, _DISCRETE, 60).trials] == [t.params for t in study.trials]
    assert _probability(again.policy(study), _BEST) == p


def test_the_policy_is_uniform_until_the_start_up_trials_have_completed():
    sampler = ReinforceSampler(search_space=_DISCRETE, seed=0, n_startup_trials=5)
    study = _run(sampler, _DISCRETE, 5)
    policy = sampler.policy(study)
    for name in _DISCRETE.names:
        np.testing.assert_array_equal(policy.logits[name], 0.0)
    _run(sampler, _DISCRETE, 1, study)
    assert any(np.any(sampler.policy(study).logits[n] != 0.0) for n in _DISCRETE.names)


def test_a_fresh_sampler_and_a_long_lived_one_propose_the_same_on_the_same_study():
    long_lived = ReinforceSampler(search_space=_DISCRETE, seed=3, n_startup_trials=2)
    study = _run(long_lived, _DISCRETE, 8)
    # Two trials finish out of order: trial 9 before trial 8, then trial 8 (a rebuild).
    t8, t9 = study.ask(), study.ask()
    p8, p9 = _DISCRETE.suggest(t8), _DISCRETE.suggest(t9)
    study.tell(t9, _mismatches(p9))
    long_lived.policy(study)  # replays trial 9 on top of 0-7
    study.tell(t8, _mismatches(p8))
    fresh = ReinforceSampler(search_space=_DISCRETE, seed=3, n_startup_trials=2)
    a, b = long_lived.policy(study), fresh.policy(study)
    for name in _DISCRETE.names:
        np.testing.assert_array_equal(a.logits[name], b.logits[name])
    trial = study.ask()
    space = _DISCRETE.distributions()
    frozen = study._storage.get_trial(trial._trial_id)
    proposals = [s.sample_relative(study, frozen, space) for s in (long_lived, fresh)]
    assert proposals[0] == proposals[1]
    # The long-lived sampler rebuilt in number order: the same as replaying 0..9 at once.
    assert long_lived._learner is not None
    assert long_lived._learner.consumed == list(range(10))


def test_conditional_parameters_are_drawn_and_learned_only_when_active():
    space = SearchSpace(
        [
            Categorical("kind", choices=("plain", "fancy")),
            Int("depth", low=1, high=3, condition=Condition("kind", ("fancy",))),
        ]
    )
    sampler = ReinforceSampler(search_space=space, seed=0, n_startup_trials=2)
    study = optuna.create_study(sampler=sampler)
    for _ in range(30):
        trial = study.ask()
        params = space.suggest(trial)
        study.tell(trial, 1.0 if params["kind"] == "plain" else 3.0 - params["depth"])
    for t in study.trials:
        assert ("depth" in t.params) == (t.params["kind"] == "fancy")
    policy = sampler.policy(study)
    # An inactive parameter's factor never moved on the trials that did not hold it.
    n_fancy = sum(t.params["kind"] == "fancy" for t in study.trials[2:])
    assert policy._t["depth"] == n_fancy and policy._t["kind"] == 28


def test_infeasible_trials_get_the_worst_feasible_reward_so_far():
    policy = Policy(_DISCRETE, {p.name: Levels.of(p, bins=8) for p in _DISCRETE})
    reward = make_reward(
        "value", [StudyDirection.MINIMIZE], score=0, cost=1, target=None, w=-0.07,
        reference_point=None,
    )  # fmt: skip
    learner = Learner(policy, reward, Settings(lr=0.1, entropy=0.0, baseline_decay=0.9,
                                              n_startup_trials=0))  # fmt: skip
    params = {"a": "x", "b": 1, "c": 0}
    assert learner.consume(0, params, np.array([5.0]), feasible=False) is None  # none yet
    assert learner.consume(1, params, np.array([2.0]), feasible=True) == -2.0
    assert learner.consume(2, params, np.array([7.0]), feasible=True) == -7.0
    assert learner.consume(3, params, np.array([0.0]), feasible=False) == -7.0
    assert learner.consume(4, params, np.array([np.inf]), feasible=True) == -7.0
    assert learner.consumed == [0, 1, 2, 3, 4]


def test_constraints_func_makes_infeasible_trials_worst():
    space = SearchSpace([Int("n", low=0, high=3)])
    sampler = ReinforceSampler(
        search_space=space, seed=0, n_startup_trials=0,
        constraints_func=lambda t: [t.params["n"] - 1.5],
    )  # fmt: skip
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for _ in range(40):
        trial = study.ask()
        params = space.suggest(trial)
        study.tell(trial, float(params["n"]))  # the larger the better, but n > 1 infeasible
    assert all(t.constraints for t in study.trials)
    p = sampler.policy(study).probabilities("n")
    assert int(np.argmax(p)) == 1  # the best feasible level


# -- rewards ---------------------------------------------------------------------------------


def test_mnas_reward_on_a_hand_made_example():
    reward = MnasReward(score=0, cost=1, target=2.0, w=-0.07, sign=1.0)
    assert reward(np.array([0.8, 2.0])) == pytest.approx(0.8)
    assert reward(np.array([0.8, 4.0])) == pytest.approx(0.8 * 2.0**-0.07)
    assert reward(np.array([0.8, 1.0])) == pytest.approx(0.8 * 0.5**-0.07)
    # A negative score is divided by the factor: still worse as the cost grows.
    assert reward(np.array([-0.5, 4.0])) == pytest.approx(-0.5 / 2.0**-0.07)
    assert reward(np.array([-0.5, 4.0])) < reward(np.array([-0.5, 2.0]))
    assert reward(np.array([0.8, 0.0])) is None  # a cost must be positive
    # Built for a study: a minimised score (a loss) is negated.
    directions = [StudyDirection.MINIMIZE, StudyDirection.MINIMIZE]
    loss = make_reward(
        "mnas", directions, score=0, cost=1, target=2.0, w=-0.07, reference_point=None
    )
    assert loss(np.array([0.3, 2.0])) == pytest.approx(-0.3)
    assert loss(np.array([0.2, 2.0])) > loss(np.array([0.3, 2.0]))


def test_hypervolume_reward_on_a_hand_made_example():
    # Two minimised objectives, reference (4, 4); each trial's box runs from the best values so
    # far (this trial's included) to the reference, and has volume 1.
    reward = HypervolumeReward(np.array([1.0, 1.0]), np.array([4.0, 4.0]))
    assert reward(np.array([1.0, 3.0])) == pytest.approx(1.0)  # the first fills its box
    # Best (1, 1), box 3 x 3: the front {(1, 3)} covers [1,4] x [3,4] = 3/9; adding (3, 1)
    # covers [3,4] x [1,3] more: 2/9.
    assert reward(np.array([3.0, 1.0])) == pytest.approx(2.0 / 9)
    assert reward(np.array([2.0, 2.0])) == pytest.approx(1.0 / 9)  # adds [2,3) x [2,3)
    assert reward(np.array([2.5, 2.5])) == 0.0  # dominated
    assert reward(np.array([5.0, 0.5])) == 0.0  # beyond the reference
    assert reward.front.tolist() == [[1.0, 3.0], [3.0, 1.0], [2.0, 2.0], [5.0, 0.5]]
    # Maximised objectives are sign-flipped: the same example, negated, gives the same.
    flipped = HypervolumeReward(np.array([-1.0, -1.0]), np.array([-4.0, -4.0]))
    assert flipped(np.array([-1.0, -3.0])) == pytest.approx(1.0)
    assert flipped(np.array([-3.0, -1.0])) == pytest.approx(2.0 / 9)


def test_volume_reward_on_a_hand_made_example():
    # The same normalisation as the improvement; each trial's own box, dominated or not.
    reward = HypervolumeReward(np.array([1.0, 1.0]), np.array([4.0, 4.0]), own=True)
    assert reward(np.array([1.0, 3.0])) == pytest.approx(1.0)  # best so far: the whole box
    assert reward(np.array([3.0, 1.0])) == pytest.approx(1.0 / 3)  # (1 - 2/3) x 1
    assert reward(np.array([2.0, 2.0])) == pytest.approx(4.0 / 9)  # (2/3)^2
    assert reward(np.array([2.5, 2.5])) == pytest.approx(0.25)  # dominated, still graded
    assert reward(np.array([5.0, 0.5])) == 0.0  # beyond the reference
    directions = [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    built = make_reward(
        "volume", directions, score=0, cost=1, target=None, w=-0.07, reference_point=[0.0, 4.0]
    )
    assert isinstance(built, HypervolumeReward) and built.own
    assert built(np.array([3.0, 1.0])) == pytest.approx(1.0)


def test_hypervolume_reward_without_a_reference_point_uses_the_observed_ranges():
    reward = HypervolumeReward(np.array([1.0, 1.0]), None)
    assert reward(np.array([0.0, 10.0])) == pytest.approx(1.1 * 1.1)  # one point: unit box
    # Ranges now 0..10 in both: the first point at (0, 1), the new one at (1, 0), the
    # reference at (1.1, 1.1); the new one adds [1, 1.1] x [0, 1].
    assert reward(np.array([10.0, 0.0])) == pytest.approx(0.1)


def test_reward_and_study_must_fit():
    two = [StudyDirection.MINIMIZE, StudyDirection.MAXIMIZE]
    kwargs: dict[str, Any] = {"score": 0, "cost": 1, "target": 1.0, "w": -0.07}
    with pytest.raises(ConfigError, match="needs one objective"):
        make_reward("value", two, reference_point=None, **kwargs)
    with pytest.raises(ConfigError, match="needs a score and a cost"):
        make_reward("mnas", two[:1], reference_point=None, **kwargs)
    with pytest.raises(ConfigError, match=r"objective index in \[0, 1\], but got 2"):
        make_reward("mnas", two, reference_point=None, **{**kwargs, "cost": 2})
    with pytest.raises(ConfigError, match="one value per objective"):
        make_reward("hypervolume", two, reference_point=[1.0], **kwargs)
    study = optuna.create_study(
        directions=["minimize", "minimize"], sampler=ReinforceSampler(reward="value")
    )
    with pytest.raises(ConfigError, match="needs one objective"):
        study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=2)


def test_mnas_reward_steers_a_study():
    # score = x in (0, 1] (maximise), cost = 10 x^2 + 1 (minimise): with target 1 and w = -0.07
    # the reward x (10 x^2 + 1)^-0.07 still rises with x, so the top level wins.
    space = SearchSpace([Float("x", low=0.1, high=1.0, step=0.1)])
    sampler = ReinforceSampler(
        search_space=space, seed=0, reward="mnas", score=0, cost=1, target=1.0,
        n_startup_trials=3,
    )  # fmt: skip
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    for _ in range(40):
        trial = study.ask()
        x = space.suggest(trial)["x"]
        study.tell(trial, [x, 10 * x * x + 1])
    levels = sampler.policy(study).levels["x"].values
    assert levels[int(np.argmax(sampler.policy(study).probabilities("x")))] >= 0.8


# -- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"reward": "accuracy"},
            "`reward` must be one of 'value', 'mnas', 'hypervolume', 'volume'",
        ),
        ({"target": 2.0}, "`target` only apply to `reward='mnas'`"),
        ({"reward": "mnas"}, "`reward='mnas'` needs `target`"),
        ({"reward": "mnas", "target": 0.0}, "`target` must be a positive finite number"),
        ({"reward": "mnas", "target": 1.0, "score": 1}, "must be different objectives"),
        ({"reward": "mnas", "target": 1.0, "cost": -1}, "`cost` must be an int >= 0"),
        ({"reward": "mnas", "target": 1.0, "w": "x"}, "`w` must be a finite number"),
        ({"bins": 1}, "`bins` must be an int >= 2, but got 1"),
        ({"bins": 4.5}, "`bins` must be an int >= 2"),
        ({"lr": 0.0}, "`lr` must be a positive finite number, but got 0.0"),
        ({"lr": float("nan")}, "`lr` must be a positive finite number"),
        ({"entropy": -0.1}, "`entropy` must be >= 0"),
        ({"baseline_decay": 1.0}, r"`baseline_decay` must be in \[0, 1\), but got 1.0"),
        ({"n_startup_trials": -1}, "`n_startup_trials` must be an int >= 0"),
        ({"reference_point": "12"}, "`reference_point` must be a sequence of numbers"),
        ({"reference_point": [1.0, float("inf")]}, "must hold finite numbers"),
        ({"seed": 1.5}, "`seed` must be an int or None"),
        ({"search_space": 3}, "`search_space` must be a SearchSpace"),
    ],
)
def test_bad_options_raise_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        ReinforceSampler(**options)


def _spec(tmp_path, trials: int, **options: Any) -> dict[str, Any]:
    return {
        "study": "ctl-reinforce",
        "run_dir": str(tmp_path / "reinforce"),
        "objective": {"type": "peft_like"},  # mixed: bools, ints, categorical, a condition
        "controller": {"name": "reinforce", "seed": 7, "options": options},
        "budget": {"trials": trials},
    }


def test_the_controller_takes_the_spec_space_reference_point_and_options(tmp_path):
    spec = load_spec(_spec(tmp_path, 4, reward="mnas", target=0.5, w=-0.1, bins=6))
    sampler = spec.make_sampler()
    assert isinstance(sampler, ReinforceSampler)
    assert sampler._space == spec.search_space
    assert spec.reference_point is not None
    assert sampler._reference == tuple(spec.reference_point[m.name] for m in spec.metrics)
    assert sampler._mnas == (0, 1, 0.5, -0.1) and sampler._bins == 6
    # The seed is kept on resume (keyed by trial number).
    assert spec.make_sampler(n_existing_trials=5)._seed == sampler._seed


def test_the_controller_rejects_unknown_and_bad_options(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_spec(_spec(tmp_path, 4, learning_rate=0.1))
    assert info.value.path == ("controller", "options", "learning_rate")
    assert "lr" in str(info.value) and "baseline_decay" in str(info.value)
    with pytest.raises(ConfigError, match="`bins` must be an int >= 2") as info:
        load_spec(_spec(tmp_path, 4, bins=0)).make_sampler()
    assert info.value.path == ("controller", "options")


def test_a_search_runs_with_the_controller(tmp_path):
    spec = load_spec(_spec(tmp_path, 12, n_startup_trials=4))
    result = run_search(spec.plan())
    assert result.counts["COMPLETE"] == 12
    trials = result.store.study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 12
    for t in trials:
        spec.search_space.validate(t.params)
    assert result.pareto


def test_plain_optuna_distributions_define_the_policy():
    sampler = ReinforceSampler(seed=0, n_startup_trials=0, bins=4)
    study = optuna.create_study(sampler=sampler)
    space = {
        "x": FloatDistribution(-1.0, 1.0),
        "n": IntDistribution(1, 100, log=True),
        "c": CategoricalDistribution(["a", "b"]),
    }
    for _ in range(5):
        trial = study.ask(space)
        study.tell(trial, trial.params["x"])
    policy = sampler.policy(study)
    assert policy.levels["x"].values == pytest.approx((-1.0, -1 / 3, 1 / 3, 1.0))
    assert policy.levels["n"].values == (1, 5, 22, 100)
    assert policy.levels["c"].values == ("a", "b")
    # Proposals of the relative space are grid values, of Python types.
    values = [t.params for t in study.trials[1:]]
    assert all(v["x"] in policy.levels["x"].values for v in values)
    assert all(type(v["n"]) is int for v in values)


def test_a_pickled_sampler_proposes_what_the_original_does():
    # Ray and worker processes get the sampler pickled, with its replayed state.
    import pickle

    sampler = ReinforceSampler(search_space=_DISCRETE, seed=1, n_startup_trials=2)
    study = _run(sampler, _DISCRETE, 6)
    copy = pickle.loads(pickle.dumps(sampler))
    trial = study._storage.get_trial(study.ask()._trial_id)
    space = _DISCRETE.distributions()
    assert copy.sample_relative(study, trial, space) == sampler.sample_relative(study, trial, space)
