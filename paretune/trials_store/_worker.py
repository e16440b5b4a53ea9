"""The worker side of a trial: its reports to the study and to its MLflow run.

A runner evaluates a trial in some process (the driver, a worker process, a Ray worker on
another machine). There, :func:`attach_trial` connects the trial's
:class:`~paretune.objectives.TrialContext` to the study it belongs to, from a
:class:`TrialLink` (plain data that pickles): every ``ctx.report(step, metrics)`` becomes a step
of the trial's MLflow run and, for one optimised metric, an intermediate value of the Optuna
trial that the study's pruner judges (``ctx.should_prune()``). Clients and loaded studies are
cached per process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from paretune.objectives import TrialContext

__all__ = ["TrialLink", "attach_trial"]

_log = logging.getLogger(__name__)

_clients: dict[str, Any] = {}
_RETRY_S = 15.0  # after a failed MLflow write, the next try waits this long
_studies: dict[tuple[str, str], Any] = {}


@dataclass(frozen=True, kw_only=True)
class TrialLink:
    """Where one trial reports, as plain data.

    Attributes:
        trial_number: The trial's number (for messages).
        trial_id: Its id in the storage.
        storage_url: The study's storage, or ``None``: no intermediate values.
        study_name: The study's name.
        report_metric: The metric whose reports are the trial's intermediate values (one
            optimised metric: Optuna prunes single-objective studies), or ``None``.
        pruner: The study's pruner (Optuna pruners pickle), or ``None``.
        tracking_uri: The MLflow tracking URI, or ``None``: no MLflow.
        mlflow_run_id: The trial's child run.
    """

    trial_number: int
    trial_id: int
    storage_url: str | None = None
    study_name: str | None = None
    report_metric: str | None = None
    pruner: optuna.pruners.BasePruner | None = None
    tracking_uri: str | None = None
    mlflow_run_id: str | None = None


def attach_trial(ctx: TrialContext, link: TrialLink) -> None:
    """Send ``ctx``'s reports to the trial's MLflow run and Optuna trial, and connect its
    pruner (see the module docstring). Logging a step to MLflow is best effort (a failure is
    logged as a warning); an error of the Optuna storage fails the trial, as in the driver."""
    _attach_mlflow(ctx, link)
    _attach_optuna(ctx, link)


def _attach_mlflow(ctx: TrialContext, link: TrialLink) -> None:
    if not (link.tracking_uri and link.mlflow_run_id):
        return
    run_id = link.mlflow_run_id
    tracking_uri = link.tracking_uri
    logged: set[tuple[str, int]] | None = None

    def client() -> Any:
        # Made at the first report: importing mlflow and opening its store take seconds, which
        # an objective that reports nothing should not wait for (nor count in its timeout).
        if tracking_uri not in _clients:
            from mlflow import MlflowClient

            from paretune.trials_store._mlflow import _quiet_mlflow_logs

            _quiet_mlflow_logs()
            _clients[tracking_uri] = MlflowClient(tracking_uri=tracking_uri)
        return _clients[tracking_uri]

    def already_logged() -> set[tuple[str, int]]:
        # A retried attempt (after its worker died) reports the steps of the first attempt
        # again: they are logged once.
        run = client().get_run(run_id)
        history = client().get_metric_history
        return {(key, m.step) for key in run.data.metrics for m in history(run_id, key)}

    # Steps that could not be logged (the tracking server was down) are kept and sent with
    # the next report after _RETRY_S seconds; the final metrics are the driver's to log.
    unsent: list[tuple[int, dict[str, float]]] = []
    retry_at = 0.0
    failing = False

    def to_mlflow(step: int, metrics: dict[str, float]) -> None:
        nonlocal logged, retry_at, failing
        unsent.append((step, dict(metrics)))
        if time.monotonic() < retry_at:
            return
        try:
            if logged is None:
                logged = already_logged()
            from paretune.trials_store._mlflow import MlflowLink

            while unsent:
                at, values = unsent[0]
                fresh = {k: v for k, v in values.items() if (k, at) not in logged}
                if fresh:
                    MlflowLink.log_batch_to(client(), run_id, fresh, step=at)
                unsent.pop(0)
            failing = False
        except Exception as err:  # tracking is best-effort: it must never fail a trial
            if not failing:
                failing = True
                _log.warning(
                    "could not log step %d of trial %d to MLflow: %s; trying again in %.0f s",
                    step,
                    link.trial_number,
                    err,
                    _RETRY_S,
                )
            retry_at = time.monotonic() + _RETRY_S

    ctx.add_sink(to_mlflow)


def _attach_optuna(ctx: TrialContext, link: TrialLink) -> None:
    if not (link.storage_url and link.study_name and link.report_metric):
        return
    import optuna

    from paretune.trials_store._ownership import make_storage, quiet

    key = (link.storage_url, link.study_name)
    if key not in _studies:  # one storage engine per study and process
        with quiet():
            _studies[key] = optuna.load_study(
                study_name=link.study_name, storage=make_storage(link.storage_url)
            )
    study = _studies[key]
    study.pruner = link.pruner or optuna.pruners.NopPruner()
    trial = optuna.trial.Trial(study, link.trial_id)
    name = link.report_metric

    def to_optuna(step: int, metrics: dict[str, float]) -> None:
        if name in metrics:
            trial.report(metrics[name], step)

    ctx.add_sink(to_optuna)
    ctx.set_pruner(trial.should_prune)
