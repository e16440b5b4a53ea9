"""The actions family (DAC) on real studies: where it applies, the episodes and decisions it
extracts and in which order, the panels and traces it draws, labelled runs, the thinning of
many episodes, and its section in the report."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import optuna
import pytest

from paretune import ConfigError
from paretune.dashboards import StudyData, build_report, figure_family, registered_figures
from paretune.dashboards.figures import Actions, ActionsData
from paretune.objectives import Metric
from paretune.spaces.dynamic import Decision, DecisionState
from paretune.trials_store import LABEL_ATTR, TRAJECTORY_ATTR

optuna.logging.set_verbosity(optuna.logging.WARNING)

LOSS = (Metric("loss", "minimize"),)
LR = "learning_rate"


def trajectory(
    values: list[float],
    *,
    interval: int = 10,
    name: str = LR,
    losses: list[float] | None = None,
    actions: list[int | None] | None = None,
) -> list[dict[str, Any]]:
    """A trajectory as ``tell`` stores it: a decision every ``interval`` steps from step 0; the
    first state has no loss yet (NaN, stored as ``None``)."""
    out = []
    before = values[0]
    for i, value in enumerate(values):
        loss = float("nan") if i == 0 else (losses[i] if losses else 4.0 - 0.1 * i)
        state = DecisionState(
            step=i * interval, progress=i / len(values), loss=loss, value=before, name=name
        )
        action = actions[i] if actions else i % 3
        out.append(
            Decision(
                state=state, action=action, value=value, log_prob=-1.1, reward=0.1 * i
            ).to_dict()
        )
        before = value
    return out


def add(
    study: optuna.Study,
    params: dict[str, Any],
    attrs: dict[str, Any],
    *,
    value: float = 1.0,
) -> None:
    dists: dict[str, optuna.distributions.BaseDistribution] = {
        k: optuna.distributions.IntDistribution(0, 10_000) for k in params
    }
    study.add_trial(
        optuna.trial.create_trial(params=params, distributions=dists, value=value, user_attrs=attrs)
    )


def dac_study(storage: str | None = None) -> StudyData:
    """Three training episodes stored out of order (trial 0 is episode 2), a trial without a
    trajectory, and a saved policy's evaluation labelled ``held-out``."""
    study = optuna.create_study(storage=storage)
    add(study, {"episode": 2, "seed": 7}, {TRAJECTORY_ATTR: trajectory([4e-3, 8e-3, 4e-3])})
    add(study, {"episode": 0, "seed": 5}, {TRAJECTORY_ATTR: trajectory([1e-3, 2e-3, 2e-3])})
    add(study, {"episode": 1, "seed": 6}, {TRAJECTORY_ATTR: trajectory([2e-3, 1e-3, 5e-4])})
    add(study, {"seed": 1}, {})  # a plain trial: no decisions
    add(
        study,
        {"seed": 99},
        {TRAJECTORY_ATTR: trajectory([1e-3, 2e-3, 4e-3]), LABEL_ATTR: "held-out"},
    )
    return StudyData(name="dac", metrics=LOSS, trials=tuple(study.get_trials(deepcopy=False)))


def test_applies_only_where_some_trial_has_a_trajectory() -> None:
    family = figure_family("actions")
    assert family.applies(dac_study())
    study = optuna.create_study()
    add(study, {"seed": 0}, {})
    add(study, {"seed": 1}, {TRAJECTORY_ATTR: []})  # decided nothing
    assert not family.applies(StudyData(name="n", metrics=LOSS, trials=tuple(study.get_trials())))


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
def test_episodes_are_in_episode_order_and_labelled_runs_apart(
    storage: str, tmp_path: Path
) -> None:
    url = None if storage == "memory" else f"sqlite:///{tmp_path}/study.db"
    data = figure_family("actions").extract(dac_study(url))
    assert isinstance(data, ActionsData)
    assert data.parameters == (LR,)
    assert [(e.number, e.episode, e.rank) for e in data.episodes] == [
        (1, 0, 0),
        (2, 1, 1),
        (0, 2, 2),
    ]
    assert [e.name for e in data.episodes] == ["episode 0", "episode 1", "episode 2"]
    assert (data.n_episodes, data.n_evaluations, data.thinned) == (3, 1, False)
    (held_out,) = data.evaluations
    assert (held_out.number, held_out.label, held_out.rank, held_out.name) == (
        4,
        "held-out",
        None,
        "held-out",
    )
    first = data.episodes[0]
    assert [(p.step, p.value, p.action) for p in first.points] == [
        (0, 1e-3, 0),
        (10, 2e-3, 1),
        (20, 2e-3, 2),
    ]
    assert [p.reward for p in first.points] == pytest.approx([0.0, 0.1, 0.2])
    assert first.points[0].loss is None  # no loss before the first step
    assert first.losses() == ([10, 20], pytest.approx([3.9, 3.8]))
    assert data.log_scale(LR)
    assert data.note() == "3 episodes; 1 labelled run"


def test_draw_has_a_value_panel_on_a_log_axis_and_a_loss_panel() -> None:
    family = figure_family("actions")
    fig = family.draw(family.extract(dac_study()))
    assert fig.layout.yaxis.type == "log"
    assert fig.layout.yaxis.title.text == LR
    assert fig.layout.yaxis2.type in (None, "linear")  # the loss: plotly's default
    assert fig.layout.yaxis2.title.text == "training loss"
    assert fig.layout.xaxis2.title.text == "step"
    lines = [t for t in fig.data if "lines" in t.mode]
    # Per run a value line (panel 1) and a loss line (panel 2): 3 episodes, then the label.
    assert [(t.name, t.yaxis) for t in lines] == [
        (name, axis)
        for name in ("episode 0", "episode 1", "episode 2", "held-out")
        for axis in ("y", "y2")
    ]
    value = lines[0]
    assert list(value.x) == [0, 10, 20] and list(value.y) == [1e-3, 2e-3, 2e-3]
    assert value.line.shape == "hv"  # the value holds between decisions
    assert [list(c) for c in value.customdata] == [["0", "0"], ["1", "0.1"], ["2", "0.2"]]
    for part in ("trial 1", "episode 0", "step %{x}", "%{y", "action", "reward"):
        assert part in value.hovertemplate
    assert list(lines[1].x) == [10, 20]  # the loss where it is known
    # Light to dark with the episodes: the first is the palette's lightest colour.
    shades = [lines[i].line.color for i in (0, 2, 4)]
    brightness = [sum(int(c) for c in s[4:-1].split(",")) for s in shades]
    assert brightness == sorted(brightness, reverse=True) and len(set(brightness)) == 3
    # The labelled run: dashed, in the legend, not in the shades.
    held = lines[6]
    assert held.line.dash == "dash" and held.showlegend and not lines[0].showlegend
    assert "held-out<br>trial 4" in held.hovertemplate
    (key,) = [t for t in fig.data if t.mode == "markers"]
    assert key.marker.showscale and (key.marker.cmin, key.marker.cmax) == (0, 2)
    assert fig.layout.title.text == "3 episodes; 1 labelled run"


def test_a_value_of_zero_or_less_gives_a_linear_axis_and_holds_show_as_held() -> None:
    study = optuna.create_study()
    add(
        study,
        {"episode": 0},
        {TRAJECTORY_ATTR: trajectory([0.0, 0.5, 1.0], name="momentum", actions=[None] * 3)},
    )
    family = figure_family("actions")
    data = family.extract(StudyData(name="z", metrics=LOSS, trials=tuple(study.get_trials())))
    assert not data.log_scale("momentum")
    fig = family.draw(data)
    assert fig.layout.yaxis.type == "linear" and fig.layout.yaxis.title.text == "momentum"
    assert [c[0] for c in fig.data[0].customdata] == ["held"] * 3
    assert not [t for t in fig.data if t.mode == "markers"]  # one episode: no colour bar


def test_several_parameters_get_a_panel_each_and_the_loss_once_per_step() -> None:
    lr, wd = trajectory([1e-3, 2e-3]), trajectory([0.1, 0.0], name="weight_decay")
    both = [d for pair in zip(lr, wd, strict=True) for d in pair]
    study = optuna.create_study()
    add(study, {"episode": 0}, {TRAJECTORY_ATTR: both})
    family = figure_family("actions")
    data = family.extract(StudyData(name="w", metrics=LOSS, trials=tuple(study.get_trials())))
    assert data.parameters == (LR, "weight_decay")
    assert data.episodes[0].losses() == ([10], pytest.approx([3.9]))
    fig = family.draw(data)
    axes = [(fig.layout.yaxis.type, fig.layout.yaxis2.type, fig.layout.yaxis3.title.text)]
    assert axes == [("log", "linear", "training loss")]
    assert [t.yaxis for t in fig.data] == ["y", "y2", "y3"]


def test_many_episodes_are_thinned_evenly_and_the_title_says_so() -> None:
    study = optuna.create_study()
    for episode in range(200):
        values = [1e-3, 1e-3 * (1 + episode)]
        add(study, {"episode": episode}, {TRAJECTORY_ATTR: trajectory(values)})
    for k in range(3):
        attrs = {TRAJECTORY_ATTR: trajectory([1e-3, 2e-3]), LABEL_ATTR: f"eval {k}"}
        add(study, {"seed": k}, attrs)
    data_in = StudyData(name="many", metrics=LOSS, trials=tuple(study.get_trials()))

    data = figure_family("actions").extract(data_in)  # the default: 60
    assert len(data.episodes) == 60 and data.n_episodes == 200 and data.thinned
    episodes = [e.episode for e in data.episodes]
    assert episodes[0] == 0 and episodes[-1] == 199 and episodes == sorted(set(episodes))
    assert max(b - a for a, b in itertools.pairwise(episodes)) <= 4  # evenly spaced

    few = Actions(max_episodes=5).extract(data_in)
    assert [e.episode for e in few.episodes] == [0, 50, 100, 149, 199]
    assert [e.label for e in few.evaluations] == ["eval 0", "eval 1", "eval 2"]
    assert few.note() == "5 of 200 episodes, evenly spaced; 3 labelled runs"
    fig = Actions(max_episodes=5).draw(few)
    assert fig.layout.title.text == few.note()
    assert len([t for t in fig.data if "lines" in t.mode]) == 2 * (5 + 3)
    # The shades are the study's: the last drawn episode is the darkest of the palette.
    assert fig.data[-1].marker.cmax == 199
    with pytest.raises(ConfigError, match="max_episodes >= 2"):
        Actions(max_episodes=1)


def test_an_unreadable_trajectory_is_left_out_and_counted() -> None:
    study = optuna.create_study()
    add(study, {"episode": 0}, {TRAJECTORY_ATTR: trajectory([1e-3, 2e-3])})
    add(study, {"episode": 1}, {TRAJECTORY_ATTR: [{"action": 1}]})  # no state, no value
    data = figure_family("actions").extract(
        StudyData(name="u", metrics=LOSS, trials=tuple(study.get_trials()))
    )
    assert [e.number for e in data.episodes] == [0]
    assert data.unreadable == (1,)
    assert data.note() == "1 episode; 1 unreadable trajectory(ies) left out"


def test_the_report_of_a_dac_study_has_the_actions_figure(tmp_path: Path) -> None:
    names = registered_figures()
    assert names.index("curves") < names.index("actions") < names.index("peft")
    report = build_report(dac_study(f"sqlite:///{tmp_path}/study.db"))
    assert "actions" in [s.name for s in report.sections]
    assert not report.failed
    assert "fig-actions-0" in report.figure_ids
    assert '<section id="actions">' in report.html
