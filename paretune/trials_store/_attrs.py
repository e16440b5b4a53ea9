"""The names under which paretune records its bookkeeping in Optuna trials and studies."""

from __future__ import annotations

__all__ = [
    "BASELINE_ATTR",
    "BASELINE_INDEX_ATTR",
    "CHILD_RUN_ATTR",
    "CLAIM_ATTR_PREFIX",
    "DUPLICATE_OF_ATTR",
    "ENQUEUED_ATTR",
    "ERROR_ATTR",
    "INTERRUPTED_ATTR",
    "INTERRUPTED_BY_ATTR",
    "LABEL_ATTR",
    "METRICS_ATTR",
    "NOT_REQUEUED_ATTR",
    "OWNER_ATTR",
    "PARENT_RUN_ATTR",
    "RETRY_OF_ATTR",
    "SEED_ATTR",
    "TRAJECTORY_ATTR",
]

METRICS_ATTR = "paretune.metrics"
OWNER_ATTR = "paretune.owner"
# Trial system attribute prefix: a process that tried to claim the WAITING trial (+ its token).
CLAIM_ATTR_PREFIX = "paretune.claim:"
SEED_ATTR = "paretune.seed"
ERROR_ATTR = "paretune.error"
INTERRUPTED_ATTR = "paretune.interrupted"
RETRY_OF_ATTR = "paretune.retry_of"
DUPLICATE_OF_ATTR = "paretune.duplicate_of"
ENQUEUED_ATTR = "paretune.enqueued"
BASELINE_ATTR = "paretune.baseline"  # trial attribute: enqueued by the spec
LABEL_ATTR = "paretune.label"  # trial attribute: the baseline's label
BASELINE_INDEX_ATTR = "paretune.baseline_index"  # trial attribute: its place in the baselines
INTERRUPTED_BY_ATTR = "paretune.interrupted_by"  # the process that failed it and queues it again
NOT_REQUEUED_ATTR = "paretune.not_requeued"  # interrupted, and redone by its caller instead
PARENT_RUN_ATTR = "paretune.mlflow_parent_run_id"  # study attribute: the MLflow parent run
CHILD_RUN_ATTR = "paretune.mlflow_run_id"  # trial attribute: the MLflow child run
TRAJECTORY_ATTR = "paretune.trajectory"  # trial attribute: the decisions of ctx.decide (DAC)
