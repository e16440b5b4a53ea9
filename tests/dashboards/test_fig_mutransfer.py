"""The muTransfer family on real studies laid out as the workflow's: the mean loss per width
and learning rate, the optima, the diverged points, the panels per parametrization."""

from __future__ import annotations

from collections.abc import Sequence
from math import inf
from typing import Any

import optuna
import pytest

from paretune.dashboards import WIDTH_PALETTE, StudyData, figure_family, lr_transfer_figure
from paretune.dashboards.figures import TransferPoint
from paretune.objectives import Metric
from paretune.trials_store import ERROR_ATTR, LABEL_ATTR

optuna.logging.set_verbosity(optuna.logging.WARNING)

State = optuna.trial.TrialState
VAL_LOSS = (Metric("val_loss", "minimize"),)
DIVERGED = (
    "Traceback (most recent call last):\n  ...\nparetune.objectives.lm._errors.Diverged: the "
    "training loss is nan at step 3\n"
)
DISTRIBUTIONS = {
    "learning_rate": optuna.distributions.FloatDistribution(2**-10, 2**-4, log=True),
    "width": optuna.distributions.CategoricalDistribution([16, 32, 64]),
    "seed": optuna.distributions.CategoricalDistribution([0, 1]),
    "output_multiplier": optuna.distributions.FloatDistribution(0.5, 4.0, log=True),
    "parametrization": optuna.distributions.CategoricalDistribution(["sp", "mup"]),
}
# Per (width, log2 LR), the losses of seeds 0 and 1; None: that seed diverged.
LOSSES = {
    (16, -8): (3.0, 3.2),
    (16, -7): (2.9, 2.7),
    (16, -6): (3.3, 3.5),
    (32, -8): (2.8, 2.6),
    (32, -7): (2.6, 2.4),
    (32, -6): (2.5, None),
}


def unpack(points: Sequence[TransferPoint | None]) -> tuple[list[float], list[float], list[Any]]:
    """The log2 rates, losses and seed counts of ``points``."""
    shown = [p for p in points if p is not None]
    return [p.log2_lr for p in shown], [p.loss for p in shown], [p.seeds for p in shown]


def run(
    study: optuna.Study,
    loss: float | None,
    *,
    state: State | None = None,
    error: str | None = None,
    label: str | None = None,
    **params: Any,
) -> None:
    attrs: dict[str, Any] = {} if label is None else {LABEL_ATTR: label}
    if loss is None and state is None:  # a diverged run: the lm objective's traceback
        state, error = State.FAIL, DIVERGED
    if error is not None:
        attrs[ERROR_ATTR] = error
    study.add_trial(
        optuna.trial.create_trial(
            state=State.COMPLETE if state is None else state,
            value=loss,
            params=params,
            distributions={k: DISTRIBUTIONS[k] for k in params},
            user_attrs=attrs,
        )
    )


def grid(study: optuna.Study, **extra: Any) -> None:
    """The proxy grid as the workflow runs it: labelled cells, multipliers at their setting."""
    for (width, x), losses in LOSSES.items():
        for seed, loss in enumerate(losses):
            run(
                study, loss, label=f"proxy w{width} lr2^{x} s{seed} {extra}",
                learning_rate=2.0**x, width=width, seed=seed, output_multiplier=1.0, **extra,
            )  # fmt: skip


@pytest.fixture
def study() -> StudyData:
    study = optuna.create_study()
    grid(study)
    # A multiplier sweep at one learning rate: not a point of the curves, however low.
    for seed in (0, 1):
        run(
            study, 2.0, label=f"multiplier w16 m2 s{seed}",
            learning_rate=2.0**-7, width=16, seed=seed, output_multiplier=2.0,
        )  # fmt: skip
    # The same cell twice (its first trial diverged, a rerun completed): its completed run.
    run(study, None, label="proxy w16 lr2^-8 s0 {}", learning_rate=2.0**-8, width=16, seed=0,
        output_multiplier=1.0)  # fmt: skip
    # Runs without a result: failed otherwise than by diverging, still running.
    run(study, None, state=State.FAIL, error="RuntimeError: out of memory",
        learning_rate=2.0**-5, width=32, seed=0, output_multiplier=1.0)  # fmt: skip
    run(study, None, state=State.RUNNING, learning_rate=2.0**-5, width=16, seed=0)
    return StudyData(name="mt", metrics=VAL_LOSS, trials=tuple(study.get_trials()))


def test_points_are_the_mean_over_seeds_and_a_diverged_seed_diverges_the_point(
    study: StudyData,
) -> None:
    data = figure_family("mutransfer").extract(study)
    assert data.metric == "val_loss" and data.widths == [16, 32]
    (panel,) = data.panels
    assert panel.parametrization is None
    assert unpack(panel.curves[16]) == ([-8, -7, -6], pytest.approx([3.1, 2.8, 3.4]), [2, 2, 2])
    assert unpack(panel.curves[32]) == ([-8, -7, -6], pytest.approx([2.7, 2.5, inf]), [2, 2, 2])
    assert [p.diverged for p in panel.curves[32]] == [False, False, True]
    assert unpack([panel.optimum(16), panel.optimum(32)]) == (
        [-7, -7], pytest.approx([2.8, 2.5]), [2, 2],
    )  # fmt: skip


def test_sp_and_mup_are_side_by_side_sp_first() -> None:
    study = optuna.create_study()
    grid(study, parametrization="mup")
    grid(study, parametrization="sp")
    data = figure_family("mutransfer").extract(
        StudyData(name="both", metrics=VAL_LOSS, trials=tuple(study.get_trials()))
    )
    assert [p.parametrization for p in data.panels] == ["sp", "mup"]
    assert data.panels[0].curves == data.panels[1].curves


def test_applies_only_to_a_muTransfer_study(study: StudyData) -> None:
    family = figure_family("mutransfer")
    assert family.applies(study)
    no_width = optuna.create_study()
    run(no_width, 2.0, learning_rate=1e-3, seed=0)
    assert not family.applies(StudyData(name="lr", metrics=VAL_LOSS, trials=tuple(no_width.trials)))
    accuracy = (Metric("accuracy", "maximize"),)
    maximised = optuna.create_study(direction="maximize")
    run(maximised, 0.9, learning_rate=1e-3, width=16)
    assert not family.applies(StudyData(name="a", metrics=accuracy, trials=tuple(maximised.trials)))


def test_draw_gives_a_line_per_width_the_optima_and_the_diverged(study: StudyData) -> None:
    family = figure_family("mutransfer")
    fig = family.draw(family.extract(study))
    assert [t.name for t in fig.data] == ["width 16", "width 32", "optimum per width", "diverged"]
    # Light to dark with width; two widths take the palette's ends.
    assert (fig.data[0].line.color, fig.data[1].line.color) == (WIDTH_PALETTE[0], WIDTH_PALETTE[-1])
    width_32 = list(fig.data[1].y)
    assert width_32[:2] == pytest.approx([2.7, 2.5]) and width_32[2] is None  # out of the line
    assert list(fig.data[2].x) == [-7, -7] and fig.data[2].marker.symbol == "star"
    diverged = fig.data[3]
    assert list(diverged.x) == [-6] and diverged.marker.symbol == "x"
    assert diverged.y[0] >= fig.data[0].y[2]  # at the top edge: above every finite point


def test_two_panels_show_each_width_once_in_the_legend() -> None:
    study = optuna.create_study()
    grid(study, parametrization="sp")
    grid(study, parametrization="mup")
    family = figure_family("mutransfer")
    fig = family.draw(
        family.extract(StudyData(name="b", metrics=VAL_LOSS, trials=tuple(study.get_trials())))
    )
    names = [(t.name, t.xaxis, t.showlegend) for t in fig.data]
    assert names == [
        ("width 16", "x", True), ("width 32", "x", True), ("optimum per width", "x", True),
        ("diverged", "x", True), ("width 16", "x2", False), ("width 32", "x2", False),
        ("optimum per width", "x2", False), ("diverged", "x2", False),
    ]  # fmt: skip
    assert [a.text for a in fig.layout.annotations] == ["SP (standard parametrization)", "muP"]


def test_the_workflow_s_figure_is_the_family_s() -> None:
    html = lr_transfer_figure(
        {16: [(-8.0, 3.1), (-7.0, 2.8)], 64: [(-8.0, 2.6), (-7.0, inf)]},
        title="mt: validation loss against learning rate",
        chosen=-8.0,
    )
    for text in ("width 16", "width 64", "optimum per width", "diverged", "transferred LR"):
        assert text in html
