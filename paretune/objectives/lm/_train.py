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

__all__ = ["Diverged", "Run", "RunResult"]

Report = Callable[[int, dict[str, float]], None]


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
        if self.settings.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps_done += 1
        return value

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
    ) -> RunResult:
        """The whole run: every step, ``settings.evals`` evaluations reported as
        ``report(step, {"val_loss", "train_loss", "lr"})``.

        Returns early (with the validation loss measured then) when ``should_stop()``.

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
        while self.steps_done < self.total_steps:
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
