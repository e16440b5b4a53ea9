"""The training loop of the finetune objective: batches, schedule, evaluation, peak memory.

A plain torch loop: AdamW on the trainable parameters, linear warmup and linear decay,
gradient clipping, dynamic padding (optionally with length-grouped batches), evaluations at
fixed steps that go to ``ctx.report`` and may prune the trial.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from paretune.objectives._protocol import TrialContext, TrialPruned

if TYPE_CHECKING:
    import torch

__all__ = [
    "Encoded",
    "EvalResult",
    "Hyper",
    "PeakMemory",
    "TrainResult",
    "epoch_batches",
    "evaluate",
    "linear_schedule",
    "train",
]

_log = logging.getLogger(__name__)

# Length-grouped batches: the rows of this many batches are sorted by length together, so a
# batch pads to similar lengths while the batches stay a random mix of the data.
_GROUP_BATCHES = 50
_MEMORY_INTERVAL = 0.02  # seconds between RSS samples on CPU
_MB = 2**20


@dataclass(frozen=True)
class Hyper:
    """The optimiser and batching settings of one trial."""

    learning_rate: float
    batch_size: int
    eval_batch_size: int
    weight_decay: float
    warmup_ratio: float
    max_grad_norm: float
    group_by_length: bool
    precision: str = "fp32"
    # Learning-rate factor per kind of module (paretune.spaces.peft.module_kind); 1 if absent.
    lr_multipliers: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Encoded:
    """Token ids and label ids of the rows of one split."""

    ids: Sequence[Sequence[int]]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class EvalResult:
    """Accuracy, mean cross-entropy and macro F1 (over the labels that occur in the targets
    or the predictions, as scikit-learn's ``f1_score(average="macro")``)."""

    accuracy: float
    loss: float
    macro_f1: float


@dataclass(frozen=True)
class TrainResult:
    """What training measured; ``validation`` is the evaluation after the last step."""

    validation: EvalResult
    steps: int
    epochs: float
    train_loss: float
    train_seconds: float
    eval_seconds: float
    peak_memory_mb: float


def epoch_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, *, group_by_length: bool
) -> list[np.ndarray]:
    """One epoch of row indices in batches of ``batch_size`` (the last one may be smaller).

    With ``group_by_length``, the rows of each run of 50 batches are sorted by length before
    they are cut into batches, and the batches are shuffled: less padding, the same rows.
    """
    order = rng.permutation(len(lengths))
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    group = batch_size * _GROUP_BATCHES
    batches: list[np.ndarray] = []
    for start in range(0, len(order), group):
        part = order[start : start + group]
        part = part[np.argsort(-lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def param_groups(
    model: torch.nn.Module, learning_rate: float, multipliers: Mapping[str, float]
) -> list[dict[str, Any]]:
    """The trainable parameters in one optimiser group per module kind with a multiplier
    (``lr = learning_rate * multiplier``; kinds without one share a group at
    ``learning_rate``), in the model's parameter order within each group."""
    from paretune.spaces.peft import module_kind

    groups: dict[float, list[Any]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            factor = float(multipliers.get(module_kind(name), 1.0))
            groups.setdefault(factor, []).append(p)
    return [
        {"params": params, "lr": learning_rate * factor, "lr_multiplier": factor}
        for factor, params in groups.items()
    ]


def linear_schedule(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The learning-rate factor after ``step`` optimiser steps: linear warmup from 0 over
    ``warmup_steps``, then linear decay to 0 at ``total_steps`` (transformers'
    ``get_linear_schedule_with_warmup``)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def _autocast(device: str, precision: str) -> Any:
    """bf16 autocast (weights and optimiser states stay fp32), or nothing for fp32."""
    import torch

    return torch.autocast(
        device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16"
    )


def _collate(
    rows: Sequence[Sequence[int]], pad_id: int, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` (`batch x longest`), padded on the right."""
    import torch

    longest = max(len(r) for r in rows)
    ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), longest), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


def evaluate(
    model: torch.nn.Module,
    data: Encoded,
    *,
    batch_size: int,
    pad_id: int,
    device: str,
    precision: str = "fp32",
) -> EvalResult:
    """Accuracy, loss and macro F1 of ``model`` on ``data`` (rows sorted by length, so that
    batches pad little)."""
    import torch

    was_training = model.training
    model.eval()
    lengths = np.array([len(r) for r in data.ids])
    order = np.argsort(-lengths, kind="stable")
    predictions = np.empty(len(data), dtype=np.int64)
    loss_sum = 0.0
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            ids, mask = _collate([data.ids[i] for i in rows], pad_id, device)
            with _autocast(device, precision):
                logits = model(input_ids=ids, attention_mask=mask).logits
            logits = logits.float()
            targets = torch.from_numpy(data.labels[rows]).to(device)
            loss_sum += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
            predictions[rows] = logits.argmax(-1).cpu().numpy()
    model.train(was_training)
    targets_np = data.labels
    accuracy = float(np.mean(predictions == targets_np))
    f1s = []
    for label in np.union1d(targets_np, predictions):
        tp = int(np.sum((predictions == label) & (targets_np == label)))
        fp = int(np.sum((predictions == label) & (targets_np != label)))
        fn = int(np.sum((predictions != label) & (targets_np == label)))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return EvalResult(accuracy, loss_sum / len(data), float(np.mean(f1s)))


class PeakMemory:
    """The peak memory of a block of code, in MiB.

    On CUDA, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` at the
    start: the peak of the memory held by tensors (weights included). Elsewhere, the peak
    increase of the process's resident set size (RSS) over its size at the start, sampled by a
    background thread (psutil) every 20 ms: memory the process already held and reuses does
    not count, and peaks shorter than the interval can be missed.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_rss = 0
        self._peak_rss = 0

    @property
    def _cuda(self) -> bool:
        return self.device.startswith("cuda")

    def __enter__(self) -> PeakMemory:
        if self._cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        import psutil

        process = psutil.Process()
        self._start_rss = self._peak_rss = process.memory_info().rss

        def sample() -> None:
            while not self._stop.wait(_MEMORY_INTERVAL):
                self._peak_rss = max(self._peak_rss, process.memory_info().rss)

        self._thread = threading.Thread(target=sample, name="paretune-peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._cuda:
            import torch

            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / _MB
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        import psutil

        self._peak_rss = max(self._peak_rss, psutil.Process().memory_info().rss)
        self.peak_mb = (self._peak_rss - self._start_rss) / _MB


def train(
    model: torch.nn.Module,
    *,
    train_data: Encoded,
    validation: Encoded,
    hyper: Hyper,
    epochs: float,
    evals_per_epoch: int,
    seed: int,
    pad_id: int,
    device: str,
    ctx: TrialContext,
) -> TrainResult:
    """Train ``model``'s trainable parameters and evaluate it on ``validation`` as it goes.

    ``ceil(epochs * steps_per_epoch)`` optimiser steps (at least one); an evaluation every
    ``ceil(steps_per_epoch / evals_per_epoch)`` steps and after the last one, each reported as
    ``ctx.report(step, {"accuracy", "loss", "train_loss"})`` and followed by a pruning check.

    Raises:
        TrialPruned: ``ctx.should_prune()`` after an evaluation.
        RuntimeError: The training loss became NaN or infinite (the learning rate is too
            large, usually).
    """
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        param_groups(model, hyper.learning_rate, hyper.lr_multipliers),
        lr=hyper.learning_rate,
        weight_decay=hyper.weight_decay,
    )
    steps_per_epoch = math.ceil(len(train_data) / hyper.batch_size)
    total_steps = max(1, math.ceil(epochs * steps_per_epoch))
    warmup_steps = math.ceil(hyper.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_schedule(warmup_steps, total_steps)
    )
    eval_every = max(1, math.ceil(steps_per_epoch / evals_per_epoch))
    lengths = np.array([len(r) for r in train_data.ids])
    labels = torch.from_numpy(train_data.labels)
    rng = np.random.default_rng(seed)
    eval_kwargs: dict[str, Any] = dict(
        batch_size=hyper.eval_batch_size, pad_id=pad_id, device=device, precision=hyper.precision
    )

    model.train()
    step = 0
    losses: list[float] = []  # since the last evaluation
    train_loss = math.nan
    result: EvalResult | None = None
    train_seconds = eval_seconds = 0.0
    with PeakMemory(device) as memory:
        while step < total_steps:
            for rows in epoch_batches(
                lengths, hyper.batch_size, rng, group_by_length=hyper.group_by_length
            ):
                started = time.perf_counter()
                ids, mask = _collate([train_data.ids[i] for i in rows], pad_id, device)
                with _autocast(device, hyper.precision):
                    logits = model(input_ids=ids, attention_mask=mask).logits
                loss = torch.nn.functional.cross_entropy(logits.float(), labels[rows].to(device))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, hyper.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                value = float(loss.detach())
                train_seconds += time.perf_counter() - started
                if not math.isfinite(value):
                    raise RuntimeError(
                        f"training diverged: the loss is {value} at step {step} of "
                        f"{total_steps} (learning rate {hyper.learning_rate:g}). Use a smaller "
                        "learning rate."
                    )
                losses.append(value)
                if step % eval_every == 0 or step == total_steps:
                    started = time.perf_counter()
                    result = evaluate(model, validation, **eval_kwargs)
                    eval_seconds += time.perf_counter() - started
                    train_loss = float(np.mean(losses))
                    losses = []
                    _log.info(
                        "trial %d, step %d/%d (epoch %.2f): validation accuracy %.4f, "
                        "loss %.4f; train loss %.4f; %.2f s/step",
                        ctx.trial_number,
                        step,
                        total_steps,
                        step / steps_per_epoch,
                        result.accuracy,
                        result.loss,
                        train_loss,
                        train_seconds / step,
                    )
                    ctx.report(
                        step,
                        {
                            "accuracy": result.accuracy,
                            "loss": result.loss,
                            "train_loss": train_loss,
                        },
                    )
                    if ctx.should_prune():
                        raise TrialPruned(
                            f"pruned at step {step} of {total_steps} with validation accuracy "
                            f"{result.accuracy:.4f}"
                        )
                if step == total_steps:
                    break
    assert result is not None  # the last step always evaluates
    return TrainResult(
        validation=result,
        steps=step,
        epochs=step / steps_per_epoch,
        train_loss=train_loss,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        peak_memory_mb=memory.peak_mb,
    )
