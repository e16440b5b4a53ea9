"""Parameter importances per metric, from Optuna's importance evaluators."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from paretune.dashboards._figures import FigureFamily, register_figure
from paretune.dashboards._text import metric_title
from paretune.dashboards._theme import COLORS, apply_theme

if TYPE_CHECKING:
    from collections.abc import Callable

    from optuna.trial import FrozenTrial
    from plotly.graph_objects import Figure

    from paretune.dashboards._study_data import StudyData

__all__ = ["ImportanceData", "ParameterImportance"]


@dataclass
class ImportanceData:
    """Attributes:
    importances: Per metric title, parameter -> importance (normalised to sum to 1).
    evaluator: The Optuna evaluator used, by class name.
    trials: The completed trials they were computed on.
    skipped: Per metric title, why it has no importances (it never varied).
    """

    importances: dict[str, dict[str, float]]
    evaluator: str
    trials: int
    skipped: dict[str, str] = field(default_factory=dict)


@register_figure
class ParameterImportance(FigureFamily):
    """Optuna's fANOVA (its default) up to :attr:`fanova_max_trials` completed trials; above
    that, the mean decrease in impurity of a random forest (Optuna's
    ``MeanDecreaseImpurityImportanceEvaluator``), which gives the same ranking on the studies
    we measured at a fraction of the cost: fANOVA takes about 6 s per metric at 500 trials on
    two cores, and minutes at 10,000."""

    name = "importance"
    title = "Parameter importances"
    order = 35
    description = (
        "How much of each metric's variation across the completed trials each parameter "
        "explains (Optuna's importance evaluators; normalised to sum to 1)."
    )
    fanova_max_trials: ClassVar[int] = 200

    def applies(self, study: StudyData) -> bool:
        # Optuna's evaluators need two or more completed trials over a shared parameter that
        # takes more than one value.
        if len(study.complete) < 2:
            return False
        shared = _shared_params(study)
        return any(len({repr(t.params[p]) for t in study.complete}) > 1 for p in shared)

    def extract(self, study: StudyData) -> ImportanceData:
        import optuna

        trials = study.complete
        if len(trials) <= self.fanova_max_trials:
            evaluator: Any = optuna.importance.FanovaImportanceEvaluator(seed=0)
        else:
            evaluator = optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0)
        # The evaluators read a study: an in-memory copy of the completed trials (created
        # without Optuna's "A new study created" notice).
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            copy = optuna.create_study(directions=[m.direction for m in study.metrics])
        finally:
            optuna.logging.set_verbosity(verbosity)
        copy.add_trials(trials)
        params = _shared_params(study)
        out: dict[str, dict[str, float]] = {}
        skipped: dict[str, str] = {}
        for i, metric in enumerate(study.metrics):
            title = metric_title(metric)
            column = study.values[:, i]
            if column.min() == column.max():  # nothing to explain (fANOVA raises on it)
                skipped[title] = f"the same value in every trial ({column[0]:.6g})"
                continue
            found = optuna.importance.get_param_importances(
                copy, evaluator=evaluator, params=params, target=_value(i), normalize=True
            )
            out[title] = {k: float(v) for k, v in found.items()}
        return ImportanceData(
            importances=out,
            evaluator=type(evaluator).__name__,
            trials=len(trials),
            skipped=skipped,
        )

    def draw(self, data: ImportanceData) -> Figure:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        titles = list(data.importances)
        fig = make_subplots(rows=1, cols=max(1, len(titles)), subplot_titles=titles or None)
        for col, title in enumerate(titles, start=1):
            ranked = sorted(data.importances[title].items(), key=lambda kv: kv[1])
            fig.add_trace(
                go.Bar(
                    x=[v for _, v in ranked],
                    y=[k for k, _ in ranked],
                    orientation="h",
                    marker={"color": COLORS["front"]},
                    name=title,
                    showlegend=False,
                    hovertemplate="%{y}: %{x:.3f}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        rows = max((len(v) for v in data.importances.values()), default=0)
        note = f"{data.evaluator} on {data.trials} completed trials"
        if data.skipped:
            note += "; no importances for " + "; ".join(
                f"{k}: {v}" for k, v in data.skipped.items()
            )
        return apply_theme(
            fig,
            height=max(300, 40 + 28 * rows),
            title={"text": note, "font": {"size": 12}},
        )


def _value(i: int) -> Callable[[FrozenTrial], float]:
    def target(t: FrozenTrial) -> float:
        return float(t.values[i])

    return target


def _shared_params(study: StudyData) -> list[str]:
    """Parameters every completed trial has (the evaluators need them in each)."""
    trials = study.complete
    return [p for p in study.params_of(trials) if all(p in t.params for t in trials)]
