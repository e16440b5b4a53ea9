"""What a finetune candidate costs: its trainable parameters, counted from the params before
anything is trained (the objective's known metrics) and checked on the materialised model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from paretune.objectives.finetune._loading import Loaded
    from paretune.spaces.peft import PeftPlan, TrainableCount

__all__ = ["KNOWN_METRICS", "analytic_count", "check_materialised", "count_metrics"]

#: The metrics known before training: the trainable parameters, and their percentage of the
#: backbone (full fine-tuning is slightly above 100 because of the task head).
KNOWN_METRICS = ("trainable_params", "trainable_percent")


def analytic_count(loaded: Loaded, plan: PeftPlan) -> TrainableCount:
    """The trainable parameters of ``plan`` on the classifier, task head included.

    The first call reads the tokenizer and the labels (the head's size depends on them) and
    builds the classifier on the meta device; later calls take microseconds.
    """
    from paretune.spaces.peft import count_trainable

    layout, head_params = loaded.counting()
    return count_trainable(layout, plan, head_params=head_params)


def count_metrics(count: TrainableCount) -> dict[str, float]:
    """The :data:`KNOWN_METRICS` of a count, as a trial reports them."""
    return {"trainable_params": float(count.total), "trainable_percent": count.percent}


def check_materialised(model: Any, count: TrainableCount, plan: PeftPlan) -> None:
    """Check that ``model`` (``plan`` materialised) trains exactly ``count.total`` parameters.

    Raises:
        RuntimeError: It does not: the analytic count is wrong, a bug of
            :mod:`paretune.spaces.peft`.
    """
    from paretune.spaces.peft import trainable_parameters

    materialised = sum(trainable_parameters(model).values())
    if materialised != count.total:
        raise RuntimeError(
            f"the analytic count of trainable parameters ({count.total}) differs from the "
            f"materialised model's ({materialised}) for {plan.describe()}; this is a bug "
            "in paretune.spaces.peft."
        )
