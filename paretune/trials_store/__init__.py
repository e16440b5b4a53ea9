"""Where trials live: the Optuna study (the record), its MLflow link, recovery, export, Pareto.

``TrialsStore(StudyConfig(...))`` opens a study (``paretune.spec`` builds the config from a
spec); :func:`pareto_mask` and :func:`hypervolume` work on plain metric tables; the worker side
of a trial (its reports to the study and to MLflow) is :func:`attach_trial`.
"""

from paretune.objectives import dominates, hypervolume, log10_hv_difference, pareto_mask
from paretune.trials_store._attrs import (
    BASELINE_ATTR,
    CHILD_RUN_ATTR,
    ERROR_ATTR,
    INTERRUPTED_ATTR,
    LABEL_ATTR,
    METRICS_ATTR,
    PARENT_RUN_ATTR,
    SEED_ATTR,
    TRAJECTORY_ATTR,
)
from paretune.trials_store._config import (
    Baseline,
    Constraint,
    MetricConstraints,
    StudyConfig,
    constraint_violations,
)
from paretune.trials_store._export import export_trials, trial_records
from paretune.trials_store._mlflow import MlflowLink
from paretune.trials_store._ownership import owner_is_dead, owner_token, quiet
from paretune.trials_store._store import PendingTrial, TrialsStore
from paretune.trials_store._worker import TrialLink, attach_trial

__all__ = [
    "BASELINE_ATTR",
    "CHILD_RUN_ATTR",
    "ERROR_ATTR",
    "INTERRUPTED_ATTR",
    "LABEL_ATTR",
    "METRICS_ATTR",
    "PARENT_RUN_ATTR",
    "SEED_ATTR",
    "TRAJECTORY_ATTR",
    "Baseline",
    "Constraint",
    "MetricConstraints",
    "MlflowLink",
    "PendingTrial",
    "StudyConfig",
    "TrialLink",
    "TrialsStore",
    "attach_trial",
    "constraint_violations",
    "dominates",
    "export_trials",
    "hypervolume",
    "log10_hv_difference",
    "owner_is_dead",
    "owner_token",
    "pareto_mask",
    "quiet",
    "trial_records",
]
