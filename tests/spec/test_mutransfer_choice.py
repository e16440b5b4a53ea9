"""The muTransfer workflow's choice rules and its reading of a study, without training."""

from __future__ import annotations

import math
from types import SimpleNamespace

import optuna
import pytest

from paretune.spec._mutransfer_choice import best_point, mean_loss, regret_choice, stderr
from paretune.spec._mutransfer_study import StudyView
from paretune.trials_store import ERROR_ATTR, LABEL_ATTR

INF = math.inf


def test_a_point_with_a_diverged_seed_is_infinitely_bad() -> None:
    assert mean_loss([1.0, 3.0]) == 2.0
    assert mean_loss([1.0, INF]) == INF
    assert stderr([1.0, 3.0]) == pytest.approx(1.0)
    assert math.isnan(stderr([1.0]))


def test_best_point_ignores_diverged_points_and_breaks_ties_low() -> None:
    assert best_point({-7.0: [2.0], -6.0: [1.5, INF], -8.0: [2.0]}) == -8.0
    assert best_point({-6.0: [INF]}) is None


def test_regret_does_not_let_the_widest_proxy_outvote_the_others() -> None:
    # Width 64 has lower losses everywhere; by raw loss its optimum (-6) would win, by regret
    # the point that is near-best at both widths (-7) does.
    table = {
        32: {-8: [3.0], -7: [2.50], -6: [2.90]},
        64: {-8: [2.6], -7: [2.22], -6: [2.20]},
    }
    assert regret_choice(table, [32, 64]) == -7


def test_regret_leaves_out_a_width_that_only_diverged_and_never_chooses_a_divergence() -> None:
    table = {
        32: {-7: [2.5], -6: [2.4]},
        64: {-7: [INF], -6: [INF]},
    }
    assert regret_choice(table, [32, 64]) == -6  # width 64 left out, not nan arithmetic
    table[64] = {-7: [2.2], -6: [INF]}
    assert regret_choice(table, [32, 64]) == -7
    assert regret_choice({32: {-6: [INF]}}, [32]) is None


def test_regret_only_compares_points_every_width_ran() -> None:
    table = {32: {-7: [2.5], -6: [2.0]}, 64: {-7: [2.2]}}
    assert regret_choice(table, [32, 64]) == -7


def _trial(
    study: optuna.Study, label: str, state: str, value: float = 1.0, error: str = ""
) -> None:
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr(LABEL_ATTR, label)
    if error:
        trial.set_user_attr(ERROR_ATTR, error)
    if state == "complete":
        study.tell(trial, value)
    elif state == "fail":
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def test_the_study_view_tells_done_diverged_failed_and_queued_cells() -> None:
    study = optuna.create_study()
    _trial(study, "a", "complete", 2.5)
    _trial(study, "b", "fail", error="Traceback...\nparetune.objectives.lm._errors.Diverged: nan")
    _trial(study, "c", "fail", error="Traceback...\nMemoryError: out of memory")
    _trial(study, "d", "running")
    study.enqueue_trial({"x": 0.5}, user_attrs={LABEL_ATTR: "e"})
    view = StudyView.of(SimpleNamespace(study=study, n_finished=lambda: 3))
    assert view.done == {"a", "b"}  # a diverged run is a result: it is not run again
    assert view.losses["a"][1] == 2.5 and view.losses["b"][1] == INF
    assert set(view.errors) == {"c"}  # an out-of-memory run is run again by the next attempt
    assert view.queued == {"d", "e"}
    assert (view.finished, view.running, view.waiting) == (3, 1, 1)
