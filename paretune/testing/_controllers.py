"""The controller conformance suite: what every controller keeps, and what it declares."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, cast

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from paretune.objectives import Direction, Metric
from paretune.search import Capabilities, ControllerContext, controller_capabilities, make_sampler
from paretune.spaces import SearchSpace

__all__ = ["DISCRETE_SPACE", "MIXED_SPACE", "ControllerConformance", "metric_values"]

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


def _key(params: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


class ControllerConformance:
    """The conformance suite of one controller; subclass it as ``Test...`` in a test module.

    Override the :meth:`controller` fixture (the registered name) and, where the controller
    needs a few trials before its model-based path, :meth:`controller_options` so that it gets
    there within :attr:`n_startup` trials. Every controller is tested for:

    * valid suggestions for every parameter type past the start-up phase (conditional ones
      where it declares ``conditional``);
    * the same seed giving the same sequence, another seed another one;
    * RUNNING trials (other workers) not breaking the next proposals, and none of their
      params proposed again where it declares ``no_duplicates``;
    * a study resumed from SQLite with a new sampler continuing without replaying its start;

    and, where declared, two and three objectives with mixed directions
    (``multi_objective``) and outcome constraints (``constraints``). A controller that logs a
    warning under the ``paretune`` logger (a fallback to random sampling) fails.
    """

    n_startup: ClassVar[int] = 3
    n_trials: ClassVar[int] = 8

    @pytest.fixture
    def controller(self) -> str:
        """The registered name of the controller under test."""
        raise NotImplementedError("override the `controller` fixture with the registered name")

    @pytest.fixture
    def controller_options(self) -> dict[str, Any]:
        """The controller's options (``controller.options`` of a spec)."""
        return {}

    @pytest.fixture(autouse=True)
    def _under_test(
        self, controller: str, controller_options: dict[str, Any], caplog: pytest.LogCaptureFixture
    ) -> None:
        self.name = controller
        self.options = controller_options
        self.declared: Capabilities = controller_capabilities(controller)
        self.caplog = caplog

    # -- helpers -------------------------------------------------------------------------

    def new_sampler(
        self,
        space: SearchSpace,
        directions: Sequence[str] = ("minimize",),
        *,
        seed: int | None = 0,
        n_existing_trials: int = 0,
        constraints_func: Callable[[FrozenTrial], Sequence[float]] | None = None,
    ) -> optuna.samplers.BaseSampler:
        """The controller's sampler, built by :func:`~paretune.search.make_sampler` as a
        search builds it."""
        context = ControllerContext(
            space=space,
            metrics=tuple(Metric(f"m{i}", cast(Direction, d)) for i, d in enumerate(directions)),
            seed=seed,
            constraints_func=constraints_func,
        )
        return make_sampler(self.name, context, self.options, n_existing_trials=n_existing_trials)

    def space(self, spec: Mapping[str, Mapping[str, Any]]) -> SearchSpace:
        """``spec`` as a space, without its conditional parameters where the controller does
        not declare ``conditional``."""
        kept = {
            name: dict(p)
            for name, p in spec.items()
            if self.declared.conditional or "condition" not in p
        }
        return SearchSpace.from_dict(kept)

    @staticmethod
    def ask_tell(study: optuna.Study, space: SearchSpace, n: int) -> list[dict[str, Any]]:
        """Run ``n`` trials one after the other; the params each one got."""
        out = []
        for _ in range(n):
            trial = study.ask()
            params = space.suggest(trial)
            study.tell(trial, metric_values(params, len(study.directions)))
            out.append(params)
        return out

    @staticmethod
    def check_valid(space: SearchSpace, trials: Sequence[FrozenTrial]) -> None:
        for t in trials:
            space.validate(t.params)  # raises on a bad value, a missing or inactive parameter
            assert set(t.params) == set(space.active(t.params)), t.params

    def fallback_warnings(self) -> list[str]:
        # A controller that falls back (logs a warning and samples at random) would pass the
        # validity checks without ever running its model.
        return [
            r.getMessage()
            for r in self.caplog.records
            if r.name.startswith("paretune") and r.levelno >= logging.WARNING
        ]

    # -- the suite -----------------------------------------------------------------------

    def test_valid_values_for_every_parameter_type(self) -> None:
        space = self.space(MIXED_SPACE)
        study = optuna.create_study(sampler=self.new_sampler(space))
        suggested = self.ask_tell(study, space, self.n_trials)

        trials = study.trials
        assert [t.state for t in trials] == [TrialState.COMPLETE] * self.n_trials
        assert [t.params for t in trials] == suggested  # what the objective got is stored
        self.check_valid(space, trials)
        for params in suggested:
            if self.declared.conditional:
                assert ("k" in params) == (params["flag"] is True)
                assert ("m" in params) == (params["kind"] in ("a", 3))
            assert params["tag"] == "v1"
            assert type(params["n"]) is int and type(params["width"]) is int
        assert self.fallback_warnings() == []

    def test_same_seed_same_sequence_other_seed_other_sequence(self) -> None:
        space = self.space(MIXED_SPACE)

        def sequence(seed: int, n: int) -> list[dict[str, Any]]:
            study = optuna.create_study(sampler=self.new_sampler(space, seed=seed))
            return self.ask_tell(study, space, n)

        first = sequence(0, self.n_trials)
        assert sequence(0, self.n_trials) == first
        # A few trials suffice to tell seeds apart (the start-up draws differ).
        assert sequence(1, 4) != first[:4]
        assert self.fallback_warnings() == []

    @pytest.mark.parametrize(
        "directions",
        [("minimize", "maximize"), ("maximize", "minimize", "maximize")],
        ids=["2obj", "3obj"],
    )
    def test_several_objectives_with_mixed_directions(self, directions: tuple[str, ...]) -> None:
        if not self.declared.multi_objective:
            pytest.skip("the controller does not declare multi_objective")
        space = self.space(MIXED_SPACE)
        study = optuna.create_study(
            directions=[cast(Direction, d) for d in directions],
            sampler=self.new_sampler(space, directions),
        )
        self.ask_tell(study, space, self.n_trials)

        assert [d.name.lower() for d in study.directions] == list(directions)
        trials = study.trials
        assert [t.state for t in trials] == [TrialState.COMPLETE] * self.n_trials
        assert all(len(t.values) == len(directions) for t in trials)
        self.check_valid(space, trials)
        assert study.best_trials  # a non-empty Pareto front
        assert self.fallback_warnings() == []

    def test_outcome_constraints_are_evaluated_for_every_trial(self) -> None:
        if not self.declared.constraints:
            pytest.skip("the controller does not declare constraints")
        space = self.space(DISCRETE_SPACE)
        seen: list[int] = []

        def constraints(trial: FrozenTrial) -> list[float]:
            seen.append(trial.number)
            return [float(trial.params["n"]) - 1.5]  # feasible: n <= 1

        study = optuna.create_study(sampler=self.new_sampler(space, constraints_func=constraints))
        self.ask_tell(study, space, self.n_trials)

        assert sorted(set(seen)) == list(range(self.n_trials))
        self.check_valid(space, study.trials)
        assert self.fallback_warnings() == []

    def test_running_trials_do_not_break_the_next_proposals(self) -> None:
        space = self.space(DISCRETE_SPACE)
        study = optuna.create_study(sampler=self.new_sampler(space))
        completed = self.ask_tell(study, space, self.n_startup + 1)  # past the start-up
        running = [space.suggest(study.ask()) for _ in range(3)]  # other workers' trials

        proposed = []
        for _ in range(3):
            trial = study.ask()
            proposed.append(space.suggest(trial))
            study.tell(trial, metric_values(proposed[-1], 1))

        states = [t.state for t in study.trials]
        assert states.count(TrialState.RUNNING) == 3
        assert states.count(TrialState.COMPLETE) == len(completed) + 3
        self.check_valid(space, study.trials)
        if self.declared.no_duplicates:
            everything = completed + running + proposed
            assert len({_key(p) for p in everything}) == len(everything)
        assert self.fallback_warnings() == []

    def test_resume_from_sqlite_with_a_new_sampler(self, tmp_path: Any) -> None:
        space = self.space(DISCRETE_SPACE)
        storage = f"sqlite:///{tmp_path / 'study.db'}"
        study = optuna.create_study(
            study_name="resume", storage=storage, sampler=self.new_sampler(space)
        )
        first = self.ask_tell(study, space, 5)
        del study

        resumed_study = optuna.load_study(
            study_name="resume",
            storage=storage,
            sampler=self.new_sampler(space, n_existing_trials=5),
        )
        resumed = self.ask_tell(resumed_study, space, 5)

        trials = optuna.load_study(study_name="resume", storage=storage).trials
        assert [t.number for t in trials] == list(range(10))
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 10
        assert [t.params for t in trials] == first + resumed
        self.check_valid(space, trials)
        # A resumed search does not replay the first session's draws.
        assert resumed != first
        if self.declared.no_duplicates:
            everything = first + resumed
            assert len({_key(p) for p in everything}) == len(everything)
        assert self.fallback_warnings() == []
