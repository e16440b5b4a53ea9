"""The muTransfer workflow's view of its study: cells as labelled trials, which are done,
which diverged, which failed, and the progress lines and artifacts of a stage."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from paretune.spec._search import SearchSpec

__all__ = ["DIVERGED", "Progress", "Say", "StudyView", "TransferCell", "log_to_parent", "point"]

Say = Callable[[str], None]

#: How the lm objective's divergence reads in a failed trial's traceback.
DIVERGED = re.compile(r"\bDiverged: ")


@dataclass(frozen=True)
class TransferCell:
    """One run of the workflow.

    Attributes:
        stage: ``proxy``, ``multiplier``, ``target`` or ``verify``.
        label: Unique in the study; the trial's ``paretune.label``.
        params: The trial's parameters (in ``controller`` mode, width and seed only).
    """

    stage: str
    label: str
    params: dict[str, Any]


def point(params: Mapping[str, Any]) -> tuple[tuple[str, float], ...]:
    """A trial's hyperparameters without its width and seed, as sorted pairs."""
    return tuple(sorted((k, float(v)) for k, v in params.items() if k not in ("width", "seed")))


@dataclass
class StudyView:
    """What the workflow reads of its study, by cell label.

    Attributes:
        done: Labels with a completed or diverged trial.
        queued: Labels with a trial waiting or running.
        losses: Label to the trial's params and validation loss (``inf``: diverged).
        errors: Label to the error of its last failed trial that did not diverge.
        finished: Trials the budget counts as finished.
        running: Trials running now (another driver's, or left by a dead one).
        waiting: Trials queued and not started.
    """

    done: set[str] = field(default_factory=set)
    queued: set[str] = field(default_factory=set)
    losses: dict[str, tuple[dict[str, Any], float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    finished: int = 0
    running: int = 0
    waiting: int = 0

    @classmethod
    def of(cls, store: Any) -> StudyView:
        from optuna.trial import TrialState

        from paretune.trials_store import ERROR_ATTR, LABEL_ATTR

        view = cls(finished=store.n_finished())
        for t in store.study.get_trials(deepcopy=False):
            label = t.user_attrs.get(LABEL_ATTR)
            if t.state == TrialState.RUNNING:
                view.running += 1
            elif t.state == TrialState.WAITING:
                view.waiting += 1
            if label is None:
                continue
            if t.state in (TrialState.RUNNING, TrialState.WAITING):
                view.queued.add(label)
            elif t.state == TrialState.COMPLETE and t.values:
                view.done.add(label)
                view.losses[label] = (dict(t.params), float(t.values[0]))
            elif t.state == TrialState.FAIL:
                error = str(t.user_attrs.get(ERROR_ATTR) or "")
                if DIVERGED.search(error) and label not in view.losses:
                    view.done.add(label)
                    view.losses[label] = (dict(t.params), math.inf)
                else:
                    view.errors[label] = error
        return view


class Progress:
    """A line per finished run of a stage."""

    def __init__(self, say: Say, cells: Sequence[TransferCell]) -> None:
        self.say = say
        self.labels = {c.label for c in cells}
        self.total = len(cells)
        self.count = 0

    def update(self, store: Any, trial: Any) -> None:
        from paretune.trials_store import ERROR_ATTR, LABEL_ATTR

        label = trial.user_attrs.get(LABEL_ATTR)
        if label not in self.labels:
            return
        self.count += 1
        if trial.state.name == "COMPLETE":
            shown = f"{trial.values[0]:.4f}"
        elif DIVERGED.search(str(trial.user_attrs.get(ERROR_ATTR) or "")):
            shown = "diverged"
        else:
            shown = trial.state.name.lower()
        self.say(f"  [{self.count}/{self.total}] {label}: {shown}")


def log_to_parent(spec: SearchSpec, paths: Sequence[Path]) -> None:
    """The figure, the decision table and the coordinate check, as artifacts of the
    study's MLflow parent run (``mutransfer/``)."""
    from paretune.trials_store import PARENT_RUN_ATTR, MlflowLink, TrialsStore

    config = spec.study_config(read_only=True)
    if config.tracking_uri is None:
        return
    store = TrialsStore(config, create=False, mlflow=False)
    try:
        parent = store.study.user_attrs.get(PARENT_RUN_ATTR)
    finally:
        store.close()
    if parent is None:
        return
    link = MlflowLink(tracking_uri=config.tracking_uri, experiment=config.name)
    for path in paths:
        if path.is_file():
            link.log_artifact(str(parent), str(path), "mutransfer")
