"""The actions of a dynamic-parameter policy (DAC): per episode, the controlled setting after
each decision against the step, light to dark from the first episode to the last, over a panel
of the training loss the policy saw.

What the study holds: every trial that called ``ctx.decide`` keeps its decisions in the user
attribute ``paretune.trajectory`` (:data:`~paretune.trials_store.TRAJECTORY_ATTR`, a list of
:meth:`Decision.to_dict() <paretune.spaces.dynamic.Decision.to_dict>`). A DAC training run is a
study whose trials are episodes, numbered by their ``episode`` parameter; a saved policy's
evaluations carry a label (``paretune.label``) and are drawn dashed, apart from the episodes.
Reading down the shades shows how the policy changed while it trained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paretune._errors import ConfigError
from paretune.dashboards._figures import FigureFamily, register_figure
from paretune.dashboards._text import format_value
from paretune.dashboards._theme import COLORS, WIDTH_PALETTE, apply_theme
from paretune.spaces.dynamic import Decision
from paretune.trials_store import TRAJECTORY_ATTR

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial
    from plotly.graph_objects import Figure

    from paretune.dashboards._study_data import StudyData

__all__ = ["ActionEpisode", "ActionPoint", "Actions", "ActionsData"]

# A DAC training run has hundreds of episodes; past this many lines per panel the figure is
# a smear and the report's size grows with every one, so an evenly spaced selection is drawn.
MAX_EPISODES = 60
_DASHES = ("dash", "dot", "dashdot", "longdash")
_LOSS = "training loss"


@dataclass(frozen=True)
class ActionPoint:
    """One decision of an episode.

    Attributes:
        step: The step the decision was taken at.
        parameter: The controlled setting's name (``""`` where the state does not say).
        value: The setting's value after the decision.
        action: The action taken (a discrete action's index, a continuous value), or
            ``None``: the value was held (no decider).
        reward: The reward of the interval that followed, or ``None``.
        loss: The training loss in the state the decider saw, or ``None`` (not known yet).
    """

    step: int
    parameter: str
    value: float
    action: int | float | None = None
    reward: float | None = None
    loss: float | None = None


@dataclass(frozen=True)
class ActionEpisode:
    """One trial's trajectory.

    Attributes:
        number: The trial's number.
        episode: Its ``episode`` parameter, or ``None`` where it has none.
        label: Its label (a saved policy's evaluation), or ``None`` for a training episode.
        rank: Its position among the study's training episodes (0: the first), which gives
            its shade; ``None`` for a labelled trial.
        points: Its decisions, in the order they were taken.
    """

    number: int
    episode: int | None
    label: str | None
    rank: int | None
    points: tuple[ActionPoint, ...]

    @property
    def name(self) -> str:
        """How the figure names it: its label, else ``episode N`` (else ``trial N``)."""
        if self.label is not None:
            return self.label
        return f"trial {self.number}" if self.episode is None else f"episode {self.episode}"

    def series(self, parameter: str) -> list[ActionPoint]:
        """The decisions about ``parameter``."""
        return [p for p in self.points if p.parameter == parameter]

    def losses(self) -> tuple[list[int], list[float]]:
        """The steps and the known training losses, once per step (decisions about several
        parameters at one step saw the same loss)."""
        seen: dict[int, float] = {}
        for p in self.points:
            if p.loss is not None:
                seen.setdefault(p.step, p.loss)
        return list(seen), list(seen.values())


@dataclass(frozen=True)
class ActionsData:
    """What the actions figure shows.

    Attributes:
        parameters: The controlled settings, in the order they were first decided (one value
            panel each).
        episodes: The training episodes drawn, in episode order: every one, or
            ``max_episodes`` of them evenly spaced from the first to the last.
        evaluations: The labelled trials drawn (a saved policy's evaluations), by number.
        n_episodes: How many training episodes the study has.
        n_evaluations: How many labelled trials the study has.
        unreadable: Trials whose trajectory could not be read (left out).
    """

    parameters: tuple[str, ...]
    episodes: tuple[ActionEpisode, ...]
    evaluations: tuple[ActionEpisode, ...] = ()
    n_episodes: int = 0
    n_evaluations: int = 0
    unreadable: tuple[int, ...] = ()

    @property
    def thinned(self) -> bool:
        """Whether some episodes or evaluations are not drawn."""
        return len(self.episodes) < self.n_episodes or len(self.evaluations) < self.n_evaluations

    def log_scale(self, parameter: str) -> bool:
        """Whether ``parameter``'s panel has a log axis: every drawn value is > 0."""
        values = [p.value for e in (*self.episodes, *self.evaluations) for p in e.series(parameter)]
        return bool(values) and all(v > 0 for v in values)

    def note(self) -> str:
        """The figure's title: what is drawn, and what was left out."""
        parts = [f"{len(self.episodes)} of {self.n_episodes} episodes, evenly spaced"]
        if len(self.episodes) == self.n_episodes:
            parts = [f"{self.n_episodes} episode{'s' if self.n_episodes != 1 else ''}"]
        if self.n_evaluations:
            shown = len(self.evaluations)
            if shown < self.n_evaluations:
                parts.append(f"{shown} of {self.n_evaluations} labelled runs")
            else:
                parts.append(f"{shown} labelled run{'s' if shown != 1 else ''}")
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} unreadable trajectory(ies) left out")
        return "; ".join(parts)


class Actions(FigureFamily):
    """Per episode, the controlled setting after each decision against the step (light to
    dark: first to last episode; labelled evaluations dashed), over the training loss.

    Args:
        max_episodes: The most training episodes drawn (and the most labelled trials); past
            it an evenly spaced selection, the first and the last included (default 60).

    Raises:
        ConfigError: ``max_episodes`` is less than 2.
    """

    name = "actions"
    title = "Policy actions over training (DAC)"
    order = 45
    description = (
        "The dynamic parameter's value after each decision of a run, one line per episode "
        "(lighter: earlier, darker: later), so a policy's change over its training shows as "
        "a change of shape with the shade; dashed lines are labelled runs such as a saved "
        "policy's evaluations. Below: the training loss the policy saw at each decision."
    )

    def __init__(self, *, max_episodes: int | None = None) -> None:
        self.max_episodes = MAX_EPISODES if max_episodes is None else max_episodes
        if self.max_episodes < 2:
            raise ConfigError(
                f"`max_episodes >= 2` (the first and the last) must hold, but got "
                f"{self.max_episodes!r}."
            )

    def applies(self, study: StudyData) -> bool:
        return any(t.user_attrs.get(TRAJECTORY_ATTR) for t in study.trials)

    def extract(self, study: StudyData) -> ActionsData:
        training: list[tuple[FrozenTrial, tuple[ActionPoint, ...]]] = []
        labelled: list[tuple[FrozenTrial, tuple[ActionPoint, ...]]] = []
        unreadable: list[int] = []
        for t in study.trials:
            raw = t.user_attrs.get(TRAJECTORY_ATTR)
            if not raw:
                continue
            points = _points(raw)
            if points is None:
                unreadable.append(t.number)
            elif study.label(t) is None:
                training.append((t, points))
            else:
                labelled.append((t, points))
        training.sort(key=lambda tp: _episode_order(tp[0]))
        episodes = [
            ActionEpisode(t.number, _episode(t), None, rank, points)
            for rank, (t, points) in enumerate(training)
        ]
        evaluations = [
            ActionEpisode(t.number, _episode(t), study.label(t), None, points)
            for t, points in labelled
        ]
        parameters: dict[str, None] = {}
        for _, points in (*training, *labelled):
            for p in points:
                parameters.setdefault(p.parameter, None)
        return ActionsData(
            parameters=tuple(parameters),
            episodes=tuple(_evenly(episodes, self.max_episodes)),
            evaluations=tuple(_evenly(evaluations, self.max_episodes)),
            n_episodes=len(episodes),
            n_evaluations=len(evaluations),
            unreadable=tuple(unreadable),
        )

    def draw(self, data: ActionsData) -> Figure:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        parameters = data.parameters or ("",)
        rows = len(parameters) + 1
        fig = make_subplots(
            rows=rows,
            cols=1,
            shared_xaxes=True,
            vertical_spacing=0.06,
            # The value panels get the room; the loss is context.
            row_heights=[*([2.0] * len(parameters)), 1.0],
        )
        for episode in data.episodes:
            color = _shade((episode.rank or 0) / max(data.n_episodes - 1, 1))
            _add_episode(fig, episode, parameters, line={"color": color, "width": 1.5})
        for i, evaluation in enumerate(data.evaluations):
            line = {"color": COLORS["baseline"], "width": 2, "dash": _DASHES[i % len(_DASHES)]}
            _add_episode(fig, evaluation, parameters, line=line, legend=True)
        if len(data.episodes) > 1:
            # The shades' key: a colour bar from the first drawn episode to the last.
            ends = [_episode_key(data.episodes[0]), _episode_key(data.episodes[-1])]
            fig.add_trace(
                go.Scatter(
                    x=[None, None],
                    y=[None, None],
                    mode="markers",
                    showlegend=False,
                    hoverinfo="skip",
                    marker={
                        "color": ends,
                        "colorscale": _colorscale(),
                        "cmin": ends[0],
                        "cmax": ends[1],
                        "showscale": True,
                        "colorbar": {"title": {"text": "episode"}, "thickness": 12, "len": 0.6},
                    },
                ),
                row=1,
                col=1,
            )
        for row, parameter in enumerate(parameters, start=1):
            kind = "log" if data.log_scale(parameter) else "linear"
            fig.update_yaxes(type=kind, title_text=parameter or "value", row=row, col=1)
        fig.update_yaxes(title_text=_LOSS, row=rows, col=1)
        fig.update_xaxes(title_text="step", row=rows, col=1)
        return apply_theme(
            fig,
            title={"text": data.note(), "font": {"size": 13}, "x": 0.99, "xanchor": "right"},
            height=300 + 220 * len(parameters),
            hovermode="closest",
        )


def _add_episode(
    fig: Any,
    episode: ActionEpisode,
    parameters: Sequence[str],
    *,
    line: Mapping[str, Any],
    legend: bool = False,
) -> None:
    """The episode's lines: its value in each parameter's panel, its loss in the last one."""
    import plotly.graph_objects as go

    key = "" if episode.episode is None else str(episode.episode)
    head = f"{episode.name}<br>trial {episode.number}" + (
        f", episode {key}" if key and episode.label is not None else ""
    )
    shown = legend
    for row, parameter in enumerate(parameters, start=1):
        points = episode.series(parameter)
        if not points:
            continue
        fig.add_trace(
            go.Scatter(
                x=[p.step for p in points],
                y=[p.value for p in points],
                customdata=[[_cell(p.action, "held"), _cell(p.reward, "-")] for p in points],
                mode=_mode(len(points)),
                # The value holds between decisions.
                line={**line, "shape": "hv"},
                name=episode.name,
                legendgroup=f"trial {episode.number}",
                showlegend=shown,
                hovertemplate=f"{head}<br>step %{{x}}<br>{parameter or 'value'} %{{y:.4g}}"
                "<br>action %{customdata[0]}<br>reward %{customdata[1]}<extra></extra>",
            ),
            row=row,
            col=1,
        )
        shown = False
    steps, losses = episode.losses()
    if steps:
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=losses,
                mode=_mode(len(steps)),
                line=dict(line),
                name=episode.name,
                legendgroup=f"trial {episode.number}",
                showlegend=shown,
                hovertemplate=f"{head}<br>step %{{x}}<br>{_LOSS} %{{y:.4g}}<extra></extra>",
            ),
            row=len(parameters) + 1,
            col=1,
        )


def _mode(n: int) -> str:
    """A line, with a marker where it has one point (a line of one point draws nothing)."""
    return "lines" if n > 1 else "lines+markers"


def _points(raw: Any) -> tuple[ActionPoint, ...] | None:
    """A stored trajectory's decisions, or ``None`` where it is not one (a list of
    :meth:`Decision.to_dict` dicts)."""
    if not isinstance(raw, list):
        return None
    out = []
    try:
        for item in raw:
            d = Decision.from_dict(item)
            out.append(
                ActionPoint(
                    step=d.state.step,
                    parameter=d.state.name,
                    value=d.value,
                    action=d.action,
                    reward=_finite(d.reward),
                    loss=_finite(d.state.loss),
                )
            )
    except (KeyError, TypeError, ValueError):
        return None
    return tuple(out)


def _episode(trial: FrozenTrial) -> int | None:
    value = trial.params.get("episode")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _episode_order(trial: FrozenTrial) -> tuple[bool, int, int]:
    """Episodes by their ``episode`` parameter, then trials without one by number."""
    episode = _episode(trial)
    return episode is None, episode or 0, trial.number


def _episode_key(episode: ActionEpisode) -> int:
    """Where an episode sits on the colour bar: its ``episode`` parameter, else its rank."""
    return episode.episode if episode.episode is not None else episode.rank or 0


def _evenly(items: Sequence[ActionEpisode], most: int) -> list[ActionEpisode]:
    """``most`` of ``items`` evenly spaced, the first and the last included (all if fewer)."""
    n = len(items)
    if n <= most:
        return list(items)
    return [items[round(i * (n - 1) / (most - 1))] for i in range(most)]


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    value = float(x)
    return value if math.isfinite(value) else None


def _cell(x: Any, missing: str) -> str:
    return missing if x is None else format_value(x)


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return int(hex_color[1:3], 16), int(hex_color[3:5], 16), int(hex_color[5:7], 16)


def _shade(fraction: float) -> str:
    """The palette's colour at ``fraction`` (0: lightest, 1: darkest), interpolated."""
    stops = [_rgb(c) for c in WIDTH_PALETTE]
    where = min(max(fraction, 0.0), 1.0) * (len(stops) - 1)
    i = min(int(where), len(stops) - 2)
    t = where - i
    r, g, b = (round(a + (b - a) * t) for a, b in zip(stops[i], stops[i + 1], strict=True))
    return f"rgb({r}, {g}, {b})"


def _colorscale() -> list[list[Any]]:
    last = len(WIDTH_PALETTE) - 1
    return [[i / last, _shade(i / last)] for i in range(last + 1)]


register_figure(Actions)
