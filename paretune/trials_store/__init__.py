"""Where trials live: the Optuna study (the record), its MLflow link, recovery, export, Pareto.

``from paretune.trials_store import TrialsStore`` opens the study a spec describes;
:func:`pareto_mask` and :func:`hypervolume` work on plain metric tables.
"""

from paretune.trials_store._export import export_trials, trial_records
from paretune.trials_store._mlflow import MlflowLink
from paretune.trials_store._pareto import hypervolume, log10_hv_difference, pareto_mask
from paretune.trials_store._store import (
    PendingTrial,
    TrialsStore,
    constraint_violations,
)

__all__ = [
    "MlflowLink",
    "PendingTrial",
    "TrialsStore",
    "constraint_violations",
    "export_trials",
    "hypervolume",
    "log10_hv_difference",
    "pareto_mask",
    "trial_records",
]
