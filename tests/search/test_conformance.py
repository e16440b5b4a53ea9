"""The contract every controller keeps, run on each name ``controller_names()`` lists.

A newly registered controller is tested here without a change to this file: it is built with
``make_sampler`` from a real spec and driven through real Optuna studies (in memory, or SQLite
for the resume test). The contract:

* valid suggestions for every parameter type, conditions included, past the start-up phase;
* the same seed gives the same sequence, another seed another one;
* two and three objectives with mixed directions;
* trials left RUNNING (other workers) do not break the next proposals;
* a study resumed from storage with a new sampler continues to its end.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from paretune.search import controller_names
from paretune.spec import SearchSpec, load_spec

# Options that shorten each controller's start-up so a handful of trials reaches its
# model-based path (a controller missing here runs with its defaults). ``fast`` is
# BoTorchSampler's documented cheap mode.
_OPTIONS: dict[str, dict[str, Any]] = {
    "tpe": {"n_startup_trials": 3},
    "nsga2": {"population_size": 4},
    "gp": {"n_startup_trials": 3},
    "botorch": {"fast": True, "n_startup_trials": 3},
}
_N_TRIALS = 8  # 3 start-up trials, 5 model-based (two generations for nsga2)

# Controllers that promise never to propose the params of an existing trial (any state,
# RUNNING included). Optuna's samplers make no such promise: random and nsga2 draw or breed
# without looking at running trials, tpe's constant liar and gp only make repeats unlikely.
# For those the pending and resume tests check validity and that nothing breaks.
_NO_DUPLICATES = {"botorch"}

# Every parameter type; `k` and `m` are conditional, on a two- and a four-choice parent.
MIXED_SPACE: dict[str, dict[str, Any]] = {
    "x": {"type": "float", "low": -1.0, "high": 1.0},
    "lr": {"type": "float", "low": 1.0e-4, "high": 1.0, "log": True},
    "frac": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.25},
    "n": {"type": "int", "low": 0, "high": 5},
    "width": {"type": "int", "low": 1, "high": 64, "log": True},
    "even": {"type": "int", "low": 0, "high": 10, "step": 2},
    "flag": {"type": "categorical", "choices": [True, False]},
    "kind": {"type": "categorical", "choices": ["a", 3, True, None]},
    "tag": {"type": "fixed", "value": "v1"},
    "k": {"type": "int", "low": 1, "high": 4, "condition": {"flag": [True]}},
    "m": {"type": "float", "low": 0.0, "high": 1.0, "condition": {"kind": ["a", 3]}},
}

# 4 x 3 x 3 = 36 points: small enough that a repeated params set is a real possibility.
DISCRETE_SPACE: dict[str, dict[str, Any]] = {
    "n": {"type": "int", "low": 0, "high": 3},
    "c": {"type": "categorical", "choices": ["a", 3, True]},
    "s": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.5},
}


def controllers(*, slow: frozenset[str] = frozenset()) -> pytest.MarkDecorator:
    """Parametrise over every registered controller; those in ``slow`` are marked slow."""
    return pytest.mark.parametrize(
        "name",
        [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in controller_names()],
    )


# BoTorch fits a GP per proposal: about 10 s for the mixed space's tests on two busy cores.
_SLOW = frozenset({"botorch"})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _number(value: Any) -> float:
    if value is None:
        return -0.5
    if isinstance(value, str):
        return len(value) / 4
    return float(value)


def metric_values(params: Mapping[str, Any], n_obj: int) -> list[float]:
    """A deterministic value per objective: squared distances of the params to 0.2, 0.5, 0.8."""
    xs = [_number(params[k]) for k in sorted(params)]
    return [sum((x - c) ** 2 for x in xs) for c in (0.2, 0.5, 0.8)[:n_obj]]


def objective(params: Mapping[str, Any], ctx: Any) -> dict[str, float]:
    """The spec's objective (``python`` type); the tests call ``metric_values`` directly."""
    values = metric_values(params, ctx.settings["n_obj"])
    return {f"m{i}": v for i, v in enumerate(values)}


def make_spec(
    name: str,
    space: dict[str, dict[str, Any]],
    *,
    directions: tuple[str, ...] = ("minimize",),
    seed: int | None = 0,
) -> SearchSpec:
    return load_spec(
        {
            "study": f"conformance-{name}",
            "objective": {
                "type": "python",
                "settings": {"target": f"{__name__}:objective", "n_obj": len(directions)},
                "metrics": [{"name": f"m{i}", "direction": d} for i, d in enumerate(directions)],
            },
            "space": space,
            "controller": {"name": name, "seed": seed, "options": _OPTIONS.get(name, {})},
            "budget": {"trials": _N_TRIALS},
        }
    )


def ask_tell(study: optuna.Study, spec: SearchSpec, n: int) -> list[dict[str, Any]]:
    """Run ``n`` trials one after the other; the params each one got."""
    out = []
    for _ in range(n):
        trial = study.ask()
        params = spec.search_space.suggest(trial)
        study.tell(trial, metric_values(params, len(spec.directions)))
        out.append(params)
    return out


def check_valid(spec: SearchSpec, trials: list[optuna.trial.FrozenTrial]) -> None:
    space = spec.search_space
    for t in trials:
        space.validate(t.params)  # raises on a bad value, a missing or an inactive parameter
        assert set(t.params) == set(space.active(t.params)), t.params


def paretune_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    # A controller that falls back (BoTorchSampler logs a warning and samples at random) would
    # pass the validity checks without ever running its model.
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("paretune") and r.levelno >= logging.WARNING
    ]


@controllers(slow=_SLOW)
def test_valid_values_for_every_parameter_type(name, caplog):
    spec = make_spec(name, MIXED_SPACE)
    study = optuna.create_study(directions=spec.directions, sampler=spec.make_sampler())
    suggested = ask_tell(study, spec, _N_TRIALS)

    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * _N_TRIALS
    # What the objective got is what the study stored.
    assert [t.params for t in trials] == suggested
    check_valid(spec, trials)
    for params in suggested:
        assert ("k" in params) == (params["flag"] is True)
        assert ("m" in params) == (params["kind"] in ("a", 3))
        assert params["tag"] == "v1"
        assert type(params["n"]) is int and type(params["width"]) is int
    assert paretune_warnings(caplog) == []


@controllers(slow=_SLOW)
def test_same_seed_same_sequence_other_seed_other_sequence(name, caplog):
    def sequence(seed: int, n: int) -> list[dict[str, Any]]:
        spec = make_spec(name, MIXED_SPACE, seed=seed)
        study = optuna.create_study(directions=spec.directions, sampler=spec.make_sampler())
        return ask_tell(study, spec, n)

    first = sequence(0, _N_TRIALS)
    assert sequence(0, _N_TRIALS) == first
    # Four trials suffice to tell seeds apart (the start-up draws differ).
    assert sequence(1, 4) != first[:4]
    assert paretune_warnings(caplog) == []


@controllers(slow=_SLOW)
@pytest.mark.parametrize(
    "directions",
    [("minimize", "maximize"), ("maximize", "minimize", "maximize")],
    ids=["2obj", "3obj"],
)
def test_several_objectives_with_mixed_directions(name, directions, caplog):
    spec = make_spec(name, MIXED_SPACE, directions=directions)
    study = optuna.create_study(directions=spec.directions, sampler=spec.make_sampler())
    ask_tell(study, spec, _N_TRIALS)

    assert [d.name.lower() for d in study.directions] == list(directions)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * _N_TRIALS
    assert all(len(t.values) == len(directions) for t in trials)
    check_valid(spec, trials)
    assert study.best_trials  # a non-empty Pareto front
    assert paretune_warnings(caplog) == []


@controllers()
def test_running_trials_do_not_break_the_next_proposals(name, caplog):
    spec = make_spec(name, DISCRETE_SPACE)
    space = spec.search_space
    study = optuna.create_study(directions=spec.directions, sampler=spec.make_sampler())
    completed = ask_tell(study, spec, 4)  # past the start-up phase
    running = []
    for _ in range(3):  # asked, never told: what other workers are evaluating
        running.append(space.suggest(study.ask()))

    proposed = []
    for _ in range(3):
        trial = study.ask()
        proposed.append(space.suggest(trial))
        study.tell(trial, metric_values(proposed[-1], 1))

    states = [t.state for t in study.trials]
    assert states.count(TrialState.RUNNING) == 3
    assert states.count(TrialState.COMPLETE) == 7
    check_valid(spec, study.trials)
    if name in _NO_DUPLICATES:
        for params in proposed:
            assert params not in running
        everything = completed + running + proposed
        assert len({tuple(sorted(p.items(), key=str)) for p in everything}) == len(everything)
    assert paretune_warnings(caplog) == []


@controllers()
def test_resume_from_sqlite_with_a_new_sampler(name, tmp_path, caplog):
    spec = make_spec(name, DISCRETE_SPACE)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(
        study_name="resume",
        storage=storage,
        directions=spec.directions,
        sampler=spec.make_sampler(),
    )
    first = ask_tell(study, spec, 5)
    del study

    loaded = optuna.load_study(study_name="resume", storage=storage)
    assert len(loaded.trials) == 5
    resumed_study = optuna.load_study(
        study_name="resume",
        storage=storage,
        sampler=spec.make_sampler(n_existing_trials=len(loaded.trials)),
    )
    resumed = ask_tell(resumed_study, spec, 5)

    trials = optuna.load_study(study_name="resume", storage=storage).trials
    assert [t.number for t in trials] == list(range(10))
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 10
    assert [t.params for t in trials] == first + resumed
    check_valid(spec, trials)
    # The new sampler is reseeded by the study's size: the first session is not replayed.
    assert resumed != first
    if name in _NO_DUPLICATES:
        for params in resumed:
            assert params not in first
        assert len({tuple(sorted(p.items(), key=str)) for p in resumed}) == len(resumed)
    assert paretune_warnings(caplog) == []
