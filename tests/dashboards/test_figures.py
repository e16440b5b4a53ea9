"""The built-in figure families that read values: Pareto front, hypervolume, parallel
coordinates, importances; and the registry they are found through."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from paretune import ConfigError
from paretune.dashboards import (
    FigureFamily,
    StudyData,
    figure_family,
    register_figure,
    registered_figures,
)
from paretune.dashboards.figures._hypervolume import hypervolume_history
from paretune.objectives import Metric
from paretune.trials_store import LABEL_ATTR, METRICS_ATTR, Constraint

MIN_MIN = (Metric("f0", "minimize"), Metric("f1", "minimize"))


def frozen(number, values, params=None, state="COMPLETE", **attrs):
    params = params if params is not None else {"x": 0.5}
    dists = {
        k: CategoricalDistribution(["a", "b", "c"])
        if isinstance(v, str)
        else FloatDistribution(0.0, 1.0)
        for k, v in params.items()
    }
    t = optuna.trial.create_trial(
        state=optuna.trial.TrialState[state],
        params=params,
        distributions=dists,
        values=values if state == "COMPLETE" else None,
        user_attrs=attrs,
    )
    t.number = number
    return t


def test_pareto_data_marks_front_dominated_infeasible_and_baselines():
    trials = (
        frozen(0, [1.0, 4.0], {"x": 0.1}, **{METRICS_ATTR: {"f0": 1.0, "f1": 4.0, "mem": 1.0}}),
        frozen(1, [2.0, 2.0], {"x": 0.2}, **{METRICS_ATTR: {"f0": 2.0, "f1": 2.0, "mem": 1.0}}),
        frozen(2, [3.0, 3.0], {"x": 0.3}, **{METRICS_ATTR: {"f0": 3.0, "f1": 3.0, "mem": 1.0}}),
        # Best in both, but over the memory limit: infeasible, and so off the front.
        frozen(3, [0.5, 0.5], {"x": 0.4}, **{METRICS_ATTR: {"f0": 0.5, "f1": 0.5, "mem": 9.0}}),
        frozen(
            4,
            [4.0, 1.0],
            {"x": 0.5},
            **{METRICS_ATTR: {"f0": 4.0, "f1": 1.0, "mem": 1.0}, LABEL_ATTR: "lora-r8"},
        ),
        frozen(5, None, {"x": 0.6}, state="FAIL"),
    )
    study = StudyData(
        name="s",
        metrics=MIN_MIN,
        trials=trials,
        constraints=(Constraint("mem", max=2.0),),
        reevaluations={1: {0: {"f0": 2.0, "f1": 2.0}, 1: {"f0": 4.0, "f1": 2.5}}},
    )
    data = figure_family("pareto").extract(study)
    assert data.numbers == [0, 1, 2, 3, 4]
    assert data.on_front.tolist() == [True, True, False, False, True]
    assert data.feasible.tolist() == [True, True, True, False, True]
    assert data.labels == [None, None, None, None, "lora-r8"]
    mean, sd, seeds = data.reevaluated[1]
    assert mean == [3.0, 2.25] and seeds == 2
    assert sd[0] == pytest.approx(math.sqrt(2.0)) and sd[1] == pytest.approx(math.sqrt(0.125))
    # The staircase through the front (1, 4), (2, 2), (4, 1), sorted by f0.
    assert data.staircase == ([1.0, 2.0, 2.0, 4.0, 4.0], [4.0, 4.0, 2.0, 2.0, 1.0])
    # The hover shows every metric the trial returned and its configuration.
    assert "mem = 9" in data.hover[3] and "x: 0.4" in data.hover[3]
    assert "lora-r8" in data.hover[4]

    fig = figure_family("pareto").draw(data)
    names = [t.name for t in fig.data]
    groups = ["dominated", "Pareto-optimal", "infeasible", "baseline"]
    assert names == ["front", *groups, "re-evaluated (mean ± sd)"]
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["infeasible"].x) == [0.5] and by_name["infeasible"].marker.symbol == "x"
    assert list(by_name["baseline"].text) == ["lora-r8"]
    assert list(by_name["re-evaluated (mean ± sd)"].error_x.array) == pytest.approx([math.sqrt(2)])


@pytest.mark.parametrize(("m", "trace"), [(3, "scatter3d"), (4, "scatter")])
def test_pareto_draws_3d_for_three_metrics_and_a_matrix_beyond(m, trace):
    rng = np.random.default_rng(0)
    metrics = tuple(Metric(f"f{i}", "minimize") for i in range(m))
    trials = tuple(frozen(i, rng.random(m).tolist()) for i in range(20))
    study = StudyData(name="s", metrics=metrics, trials=trials)
    fig = figure_family("pareto").draw(figure_family("pareto").extract(study))
    assert {t.type for t in fig.data} == {trace}
    if m == 4:  # one panel per ordered pair of metrics, both groups in each
        assert len({(t.xaxis, t.yaxis) for t in fig.data}) == m * (m - 1)


def test_pareto_and_hypervolume_do_not_apply_to_one_metric():
    study = StudyData(name="s", metrics=(Metric("loss", "minimize"),), trials=(frozen(0, [1.0]),))
    assert not figure_family("pareto").applies(study)
    assert not figure_family("hypervolume").applies(study)
    assert figure_family("pareto").applies(
        StudyData(name="s", metrics=MIN_MIN, trials=(frozen(0, [1.0, 2.0]),))
    )


@pytest.mark.parametrize("directions", [["minimize", "maximize"], ["maximize"] * 3])
def test_hypervolume_history_equals_optunas(directions):
    """The same numbers as ``optuna.visualization.plot_hypervolume_history`` (to 1e-9)."""
    rng = np.random.default_rng(1)
    m = len(directions)
    study = optuna.create_study(directions=directions)
    for _ in range(150):
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": 0.5},
                distributions={"x": FloatDistribution(0, 1)},
                values=rng.random(m).tolist(),
            )
        )
    reference = np.array([1.1 if d == "minimize" else -0.1 for d in directions])
    expected = optuna.visualization.plot_hypervolume_history(study, reference).data[0].y
    trials = study.get_trials(deepcopy=False)
    values = np.array([t.values for t in trials])
    ours = hypervolume_history(values, np.ones(len(trials), bool), directions, reference)
    assert len(ours) == len(expected)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9)
    assert ours[-1] > 0


def test_hypervolume_family_uses_the_spec_reference_and_skips_infeasible():
    trials = (
        frozen(0, [1.0, 1.0], **{METRICS_ATTR: {"f0": 1.0, "f1": 1.0, "mem": 9.0}}),
        frozen(1, [2.0, 2.0], **{METRICS_ATTR: {"f0": 2.0, "f1": 2.0, "mem": 1.0}}),
        frozen(2, [1.0, 3.0], **{METRICS_ATTR: {"f0": 1.0, "f1": 3.0, "mem": 1.0}}),
    )
    study = StudyData(
        name="s",
        metrics=MIN_MIN,
        trials=trials,
        constraints=(Constraint("mem", max=2.0),),
        reference_point={"f0": 4.0, "f1": 4.0},
    )
    data = figure_family("hypervolume").extract(study)
    # Trial 0 is infeasible: nothing; trial 1: 2 x 2; trial 2 adds the strip 1 x 1.
    assert data.hypervolume == [0.0, 4.0, 5.0]
    assert data.reference_point == [4.0, 4.0] and data.spec_reference


def test_reference_point_from_the_trials_pushes_the_worst_out_by_a_tenth():
    study = StudyData(
        name="s",
        metrics=(Metric("f0", "minimize"), Metric("acc", "maximize")),
        trials=(frozen(0, [1.0, 0.9]), frozen(1, [3.0, 0.5])),
    )
    np.testing.assert_allclose(study.hypervolume_reference(), [3.2, 0.46])


def test_parallel_coordinates_encode_categories_and_leave_out_conditional_params():
    trials = (
        frozen(0, [1.0, 2.0], {"x": 0.1, "kind": "b", "only": 0.3}),
        frozen(1, [2.0, 1.0], {"x": 0.7, "kind": "c"}),
    )
    data = figure_family("parallel").extract(StudyData(name="s", metrics=MIN_MIN, trials=trials))
    axes = {a.label: a for a in data.axes}
    assert list(axes) == ["x", "kind", "f0 ↓", "f1 ↓"]
    assert axes["kind"].values == [1.0, 2.0] and axes["kind"].ticktext == ["a", "b", "c"]
    assert axes["f1 ↓"].values == [2.0, 1.0]
    assert data.left_out == {"only": "not in every trial (conditional)"}
    assert data.color == [1.0, 2.0]
    fig = figure_family("parallel").draw(data)
    assert fig.data[0].type == "parcoords" and len(fig.data[0].dimensions) == 4


def test_importance_finds_the_parameter_a_metric_depends_on():
    rng = np.random.default_rng(0)
    trials = []
    for i in range(40):
        x, y = rng.random(), rng.random()
        trials.append(frozen(i, [x, 0.05 * x + y], {"x": x, "y": y}))
    study = StudyData(name="s", metrics=MIN_MIN, trials=tuple(trials))
    family = figure_family("importance")
    data = family.extract(study)
    assert data.evaluator == "FanovaImportanceEvaluator" and data.trials == 40
    assert max(data.importances["f0 ↓"], key=data.importances["f0 ↓"].get) == "x"
    assert max(data.importances["f1 ↓"], key=data.importances["f1 ↓"].get) == "y"
    assert sum(data.importances["f0 ↓"].values()) == pytest.approx(1.0)
    assert len(family.draw(data).data) == 2
    # Past fanova_max_trials, the random forest's impurity decrease (fast) instead.
    many = StudyData(name="s", metrics=MIN_MIN, trials=tuple(trials) * 6)
    assert family.extract(many).evaluator == "MeanDecreaseImpurityImportanceEvaluator"


def test_importance_leaves_out_a_metric_that_never_varies():
    rng = np.random.default_rng(0)
    trials = tuple(frozen(i, [float(x), 0.5], {"x": float(x)}) for i, x in enumerate(rng.random(8)))
    family = figure_family("importance")
    data = family.extract(StudyData(name="s", metrics=MIN_MIN, trials=trials))
    assert list(data.importances) == ["f0 ↓"]
    assert data.skipped == {"f1 ↓": "the same value in every trial (0.5)"}
    assert "no importances for f1 ↓" in family.draw(data).layout.title.text


def test_importance_needs_a_parameter_that_varies():
    same = tuple(frozen(i, [float(i), 1.0], {"x": 0.5}) for i in range(5))
    study = StudyData(name="s", metrics=MIN_MIN, trials=same)
    assert not figure_family("importance").applies(study)


def test_registry_rejects_what_is_not_a_family_and_taken_names():
    assert registered_figures()[:4] == ["pareto", "hypervolume", "parallel", "importance"]
    with pytest.raises(ConfigError, match="FigureFamily subclass"):
        register_figure(dict)  # type: ignore[arg-type]

    class NoTitle(FigureFamily):
        name = "no-title"

        def extract(self, study):
            return None

        def draw(self, data):
            return None

    with pytest.raises(ConfigError, match="needs a string `title`"):
        register_figure(NoTitle)

    class Pareto2(NoTitle):
        name, title = "pareto", "again"

    with pytest.raises(ConfigError, match="already registered"):
        register_figure(Pareto2)
    with pytest.raises(ConfigError, match="unknown figure family 'nope'"):
        figure_family("nope")
