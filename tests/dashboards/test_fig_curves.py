"""The learning-curve family on real studies: the curves it extracts, where it applies, the
traces it draws."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest

from paretune.dashboards import StudyData, figure_family
from paretune.dashboards.figures import CurvesData, CurveSet
from paretune.objectives import Metric

optuna.logging.set_verbosity(optuna.logging.WARNING)

State = optuna.trial.TrialState
LOSS = (Metric("loss", "minimize"),)


def _add(
    study: optuna.Study,
    state: State,
    curve: dict[int, float],
    *,
    value: float | None = None,
    values: list[float] | None = None,
) -> None:
    trial = optuna.trial.create_trial(
        state=state, value=value, values=values, intermediate_values=curve
    )
    study.add_trial(trial)


def _single(storage: str | None = None) -> StudyData:
    """Trial 1 is the best; 2 was pruned after two steps; 3 reported nothing; 4 only NaN."""
    study = optuna.create_study(storage=storage)
    _add(study, State.COMPLETE, {0: 1.0, 1: 0.7, 2: 0.5}, value=0.5)
    _add(study, State.COMPLETE, {0: 0.9, 2: 0.3, 1: 0.6}, value=0.3)  # reported out of order
    _add(study, State.PRUNED, {0: 1.2, 1: 1.1})
    _add(study, State.COMPLETE, {}, value=0.8)
    _add(study, State.FAIL, {0: math.nan})
    return StudyData(name="s", metrics=LOSS, trials=tuple(study.get_trials(deepcopy=False)))


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
def test_the_best_trial_is_the_front_and_the_rest_is_faded(storage: str, tmp_path: Path) -> None:
    url = None if storage == "memory" else f"sqlite:///{tmp_path}/study.db"
    data = figure_family("curves").extract(_single(url))
    assert (data.metric, data.front_name) == ("loss", "best trial")
    assert data.front.numbers.tolist() == [1]
    assert data.front.curve(1) == ([0.0, 1.0, 2.0], [0.9, 0.6, 0.3])
    # Trial 3 reported nothing and trial 4 only a NaN: neither has a curve.
    assert data.rest.numbers.tolist() == [0, 2]
    assert data.rest.curve(0) == ([0.0, 1.0, 2.0], [1.0, 0.7, 0.5])
    assert data.pruned.tolist() == [False, True]
    numbers, steps, values = data.pruned_at()
    assert (numbers.tolist(), steps.tolist(), values.tolist()) == ([2], [1.0], [1.1])


def test_joined_curves_are_one_polyline_with_a_gap_after_each_trial() -> None:
    rest = figure_family("curves").extract(_single()).rest
    x, y, trial = rest.joined()
    assert np.array_equal(x, [0, 1, 2, np.nan, 0, 1, np.nan], equal_nan=True)
    assert np.array_equal(y, [1.0, 0.7, 0.5, np.nan, 1.2, 1.1, np.nan], equal_nan=True)
    assert trial.tolist() == [0, 0, 0, -1, 2, 2, -1]


def test_several_metrics_highlight_the_pareto_front() -> None:
    study = optuna.create_study(directions=["minimize", "maximize"])
    _add(study, State.COMPLETE, {0: 2.0, 1: 1.0}, values=[1.0, 1.0])
    _add(study, State.COMPLETE, {0: 3.0}, values=[2.0, 2.0])
    _add(study, State.COMPLETE, {0: 4.0}, values=[3.0, 0.5])  # dominated by trial 0
    metrics = (Metric("loss", "minimize"), Metric("accuracy", "maximize"))
    data = figure_family("curves").extract(
        StudyData(name="m", metrics=metrics, trials=tuple(study.get_trials()))
    )
    assert (data.metric, data.front_name) == ("intermediate value", "Pareto front")
    assert data.front.numbers.tolist() == [0, 1]
    assert data.rest.numbers.tolist() == [2]
    assert not data.pruned.any()


def test_applies_only_where_some_trial_has_intermediate_values() -> None:
    family = figure_family("curves")
    assert family.applies(_single())
    study = optuna.create_study()
    _add(study, State.COMPLETE, {}, value=1.0)
    assert not family.applies(StudyData(name="n", metrics=LOSS, trials=tuple(study.get_trials())))


def test_draw_gives_the_faded_rest_the_front_and_the_pruned_marks() -> None:
    family = figure_family("curves")
    fig = family.draw(family.extract(_single()))
    assert [(t.type, t.name) for t in fig.data] == [
        ("scatter", "other trials (2)"),
        ("scatter", "best trial (1)"),
        ("scatter", "pruned (1)"),
    ]
    assert fig.data[1].customdata.tolist() == [1, 1, 1, -1]
    assert fig.data[2].marker.symbol == "x"
    assert fig.layout.yaxis.title.text == "loss"


def test_many_points_are_drawn_with_webgl_the_faded_ones_as_one_trace() -> None:
    k, n = 1_000, 100  # 100,000 points
    rest = CurveSet(
        numbers=np.arange(k),
        starts=np.arange(0, k * n + 1, n),
        steps=np.tile(np.arange(n, dtype=float), k),
        values=np.ones(k * n),
    )
    pruned = np.arange(k) % 2 == 0
    front = CurveSet(np.array([k]), np.array([0, 2]), np.array([0.0, 1.0]), np.array([1.0, 0.5]))
    data = CurvesData("loss", "best trial", front, rest, pruned)
    fig = figure_family("curves").draw(data)
    # All WebGL: an SVG front would be drawn under the WebGL curves.
    assert [(t.type, t.name) for t in fig.data] == [
        ("scattergl", "other trials (1000)"),
        ("scattergl", "best trial (1)"),
        ("scattergl", "pruned (500)"),
    ]
    assert len(fig.data[0].x) == k * (n + 1)
    assert fig.data[0].opacity == pytest.approx(10 / math.sqrt(k))
