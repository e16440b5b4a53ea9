"""What a study queues before the controller proposes: its baselines once, and each
interrupted trial's parameters once more.

Both survive a driver killed half-way: each queued trial carries the mark of what it stands
for (a baseline's index, the number of the trial it retries), and what is already marked is
not queued again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from paretune.trials_store._attrs import (
    BASELINE_ATTR,
    BASELINE_INDEX_ATTR,
    ENQUEUED_ATTR,
    LABEL_ATTR,
    RETRY_OF_ATTR,
    SEED_ATTR,
)
from paretune.trials_store._config import Baseline

__all__ = ["enqueue_baselines", "queue_retry"]

# What a retry keeps of the trial it repeats: what it stands for, and its seed.
_KEPT = (BASELINE_ATTR, BASELINE_INDEX_ATTR, LABEL_ATTR, SEED_ATTR)


def enqueue_baselines(study: optuna.Study, baselines: Sequence[Baseline]) -> None:
    """Queue ``baselines`` in ``study`` once in its life, first come first evaluated."""
    if not baselines or study.user_attrs.get(ENQUEUED_ATTR):
        return
    # One by one, each marked with its index: a driver killed half-way queues only the rest
    # the next time.
    queued = {t.user_attrs.get(BASELINE_INDEX_ATTR) for t in study.get_trials(deepcopy=False)}
    for index, baseline in enumerate(baselines):
        if index in queued:
            continue
        attrs: dict[str, Any] = {BASELINE_ATTR: True, BASELINE_INDEX_ATTR: index}
        if baseline.label is not None:
            attrs[LABEL_ATTR] = baseline.label
        study.enqueue_trial(dict(baseline.params), user_attrs=attrs)
    study.set_user_attr(ENQUEUED_ATTR, True)


def queue_retry(study: optuna.Study, frozen: FrozenTrial) -> None:
    """Queue the parameters of the interrupted trial ``frozen`` again, marked as its retry.

    A trial interrupted while its parameters were drawn queues those it has; the retry draws
    the rest.
    """
    keep = {k: v for k, v in frozen.user_attrs.items() if k in _KEPT}
    fixed = frozen.system_attrs.get("fixed_params")  # Optuna's record of a queued trial
    if fixed is not None:
        # Taken from the queue; perhaps never prepared, so its params may still be empty.
        study.enqueue_trial(
            {**fixed, **frozen.params}, user_attrs={**keep, RETRY_OF_ATTR: frozen.number}
        )
        return
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=frozen.params,
            distributions=frozen.distributions,
            user_attrs={**keep, RETRY_OF_ATTR: frozen.number},
        )
    )
