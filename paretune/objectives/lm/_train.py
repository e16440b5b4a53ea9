"""One lm run: the parametrised decoder, AdamW with its per-role groups, the schedule, seeded
batches, and validation on fixed windows."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from paretune.objectives.lm._data import Corpus, gather, train_windows, validation_windows
from paretune.objectives.lm._errors import Diverged
from paretune.objectives.lm._model import build_model, non_embedding_params, training_flops
from paretune.objectives.lm._settings import LMSettings
from paretune.spaces.dynamic import DecisionState, StateTracker

__all__ = ["Diverged", "Run", "RunResult"]

Report = Callable[[int, dict[str, float]], None]
Decide = Callable[[DecisionState], float]


@dataclass(frozen=True)
class RunResult:
    """What one run measured.

    Attributes:
        val_loss: Mean cross-entropy (nats per token) on the validation windows after the last
            step.
        train_loss: Mean training loss over the last tenth of the steps.
        tokens: Training tokens seen.
        flops: Training FLOPs (:func:`~paretune.objectives.lm._model.training_flops`).
        non_embedding_params: Parameters outside the input embeddings.
        seconds: Wall time of training and evaluation.
        steps: Optimizer steps taken.
    """

    val_loss: float
    train_loss: float
    tokens: int
    flops: float
    non_embedding_params: int
    seconds: float
    steps: int

    def metrics(self) -> dict[str, float]:
        return {
            "val_loss": self.val_loss,
            "train_loss": self.train_loss,
            "tokens": float(self.tokens),
            "flops": self.flops,
            "non_embedding_params": float(self.non_embedding_params),
            "seconds": self.seconds,
            "steps": float(self.steps),
        }


class Run:
    """One training run of ``settings`` on ``corpus`` from ``seed``.

    The initialisation and the data order depend on ``seed`` alone, so runs with one seed
    differ only in their settings (paired seeds). :meth:`step` takes one optimizer step,
    :meth:`evaluate` measures the validation loss, :meth:`train` does the whole run.
    """

    def __init__(
        self, settings: LMSettings, corpus: Corpus, *, seed: int, device: str = "cpu"
    ) -> None:
        self.settings = settings
        self.corpus = corpus
        self.device = torch.device(device)
        self.shape = settings.shape(corpus.vocab_size)
        self.total_steps = settings.total_steps
        self.model, self.rules = build_model(
            self.shape,
            base_width=settings.base_width,
            kind=settings.parametrization,
            init_std=settings.init_std,
            output_multiplier=settings.output_multiplier,
            attention_multiplier=settings.attention_multiplier,
            readout_zero_init=settings.readout_zero_init,
            seed=seed,
            device=self.device,
        )
        self.optimizer = torch.optim.AdamW(
            self.rules.param_groups(
                self.model,
                lr=settings.peak_learning_rate,
                weight_decay=settings.weight_decay,
            ),
            betas=settings.adam_betas,
            eps=settings.adam_eps,
        )
        schedule = settings.run_schedule()
        tokens_per_step = settings.batch_size * settings.sequence_length
        self.scheduler = schedule.build(
            self.optimizer,
            total_steps=self.total_steps,
            batch_size=settings.batch_size,
            tokens_per_step=tokens_per_step,
        )
        self.tokens_per_step = tokens_per_step
        self.windows = train_windows(
            corpus,
            seed=seed,
            steps=self.total_steps,
            batch_size=settings.batch_size,
            length=settings.sequence_length,
        )
        self.validation = torch.from_numpy(
            gather(
                corpus.validation,
                validation_windows(
                    corpus, count=settings.eval_windows, length=settings.sequence_length
                ),
                settings.sequence_length,
            )
        )
        self.steps_done = 0
        self.n_params = non_embedding_params(self.model, self.rules)
        self.dynamic = settings.dynamic_lr()
        # The dynamic learning rate scales every group's scheduled LR by value / peak.
        self.lr_value = settings.peak_learning_rate
        self.lr_scale = 1.0
        self.tracker = StateTracker(
            self.total_steps, window=self.dynamic.interval if self.dynamic else 25
        )
        if self.dynamic is not None and self.dynamic.initial is not None:
            self.set_learning_rate(self.dynamic.initial)

    def set_learning_rate(self, value: float) -> None:
        """Make ``value`` the base learning rate from the next step on (the dynamic LR): every
        group's scheduled LR is scaled by ``value`` over the settings' peak LR."""
        scale = value / self.settings.peak_learning_rate
        for group in self.optimizer.param_groups:
            group["lr"] *= scale / self.lr_scale
        self.lr_value, self.lr_scale = float(value), scale

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.settings.dtype == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of a batch of windows, `b x (length + 1)`."""
        batch = batch.to(self.device)
        with self._autocast():
            logits = self.model(input_ids=batch[:, :-1]).logits
        return F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)
        )

    def step(self) -> float:
        """One optimizer step on the next batch; its training loss.

        Raises:
            Diverged: The loss is not finite.
        """
        starts = self.windows[self.steps_done]
        batch = torch.from_numpy(gather(self.corpus.train, starts, self.settings.sequence_length))
        self.model.train()
        loss = self.loss(batch)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise Diverged(
                f"the training loss is {value} at step {self.steps_done} (learning rate "
                f"{self.settings.peak_learning_rate:g}, width {self.settings.width}): the run "
                "diverged; lower the learning rate."
            )
        loss.backward()
        grad_norm = None
        if self.settings.max_grad_norm is not None or self.dynamic is not None:
            limit = self.settings.max_grad_norm or math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), limit))
        # The update-to-weight ratio is a decision's feature: measured on the step before one.
        before = None
        if self.dynamic is not None and (self.steps_done + 1) % self.dynamic.interval == 0:
            before = [p.detach().clone() for p in self.model.parameters()]
        self.optimizer.step()
        self.scheduler.step()
        if self.lr_scale != 1.0:  # the scheduler set each group's LR afresh
            for group in self.optimizer.param_groups:
                group["lr"] *= self.lr_scale
        self.optimizer.zero_grad(set_to_none=True)
        self.steps_done += 1
        ratio = None
        if before is not None:
            with torch.no_grad():
                params = list(self.model.parameters())
                update = math.sqrt(
                    sum(float((p - b).pow(2).sum()) for p, b in zip(params, before, strict=True))
                )
                weights = math.sqrt(sum(float(p.pow(2).sum()) for p in params))
            ratio = update / weights if weights > 0 else None
        self.tracker.observe(self.steps_done, value, grad_norm=grad_norm, update_ratio=ratio)
        return value

    def decide(self, decide: Decide) -> None:
        """Ask ``decide`` for the learning rate from now on (a dynamic LR's decision)."""
        state = self.tracker.state(self.steps_done, self.lr_value, "learning_rate")
        value = decide(state)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"a decided learning rate must be > 0, but got {value!r}")
        if self.dynamic is not None:
            value = self.dynamic.clip(value)  # a replayed schedule may leave the range
        if value != self.lr_value:
            self.set_learning_rate(value)

    @torch.no_grad()
    def evaluate(self, batch_size: int = 32) -> float:
        """Mean cross-entropy on the validation windows (nats per token)."""
        self.model.eval()
        total = 0.0
        for start in range(0, len(self.validation), batch_size):
            chunk = self.validation[start : start + batch_size]
            total += float(self.loss(chunk)) * len(chunk)
        return total / len(self.validation)

    def train(
        self,
        *,
        report: Report | None = None,
        should_stop: Callable[[], bool] | None = None,
        decide: Decide | None = None,
    ) -> RunResult:
        """The whole run: every step, ``settings.evals`` evaluations reported as
        ``report(step, {"val_loss", "train_loss", "lr"})``.

        Returns early (with the validation loss measured then) when ``should_stop()``. With a
        dynamic learning rate, ``decide(state)`` sets it every ``interval`` steps (from step
        0); without ``decide`` it keeps its initial value.

        Raises:
            Diverged: The training loss became NaN or infinite.
        """
        started = time.perf_counter()
        evals = self.settings.evals
        eval_at = {round(self.total_steps * (i + 1) / evals) for i in range(evals)} | {
            self.total_steps
        }
        recent: list[float] = []
        tail = max(1, self.total_steps // 10)
        val_loss = math.nan
        interval = self.dynamic.interval if self.dynamic is not None else 0
        while self.steps_done < self.total_steps:
            if decide is not None and interval and self.steps_done % interval == 0:
                self.decide(decide)
            lr = self.optimizer.param_groups[0]["lr"] / self.optimizer.param_groups[0].get(
                "lr_multiplier", 1.0
            )
            recent.append(self.step())
            recent = recent[-tail:]
            if self.steps_done in eval_at:
                val_loss = self.evaluate()
                if report is not None:
                    report(
                        self.steps_done,
                        {"val_loss": val_loss, "train_loss": float(np.mean(recent)), "lr": lr},
                    )
                if should_stop is not None and should_stop():
                    break
        tokens = self.steps_done * self.tokens_per_step
        return RunResult(
            val_loss=val_loss,
            train_loss=float(np.mean(recent)),
            tokens=tokens,
            flops=training_flops(self.shape, self.n_params, tokens),
            non_embedding_params=self.n_params,
            seconds=time.perf_counter() - started,
            steps=self.steps_done,
        )
