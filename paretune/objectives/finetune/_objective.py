"""The ``finetune`` objective type: the :class:`Finetune` class (see the package docstring)."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from paretune._validation import config_error
from paretune.objectives._base import BaseObjective, checked_budget
from paretune.objectives._protocol import Metric, TrialContext
from paretune.objectives.finetune._costs import (
    KNOWN_METRICS,
    analytic_count,
    check_materialised,
    count_metrics,
)
from paretune.objectives.finetune._data import LabelledData
from paretune.objectives.finetune._fidelity import scaled, schedules, with_lengths
from paretune.objectives.finetune._files import check_sources
from paretune.objectives.finetune._loading import Loaded
from paretune.objectives.finetune._model import load_config, model_layout, resolve_model
from paretune.objectives.finetune._settings import Fidelity, FinetuneSettings
from paretune.objectives.finetune._space import searched_space

if TYPE_CHECKING:
    from paretune.spaces import SearchSpace
    from paretune.spaces.peft import ModelLayout

__all__ = ["Finetune"]

_log = logging.getLogger(__name__)


_BUDGET_RULE = (
    "the finetune objective takes a budget in (0, 1] (1.0: full fidelity; less: that fraction "
    "of the training examples)"
)


class Finetune(BaseObjective):
    """The ``finetune`` objective: train a PEFT candidate (or the full model) and score it.

    See :mod:`paretune.objectives.finetune` for the model, data, fidelity and training rules.
    Settings are the keyword arguments; a spec gives them under ``objective.settings``.

    Args:
        **settings: The settings, validated by :class:`FinetuneSettings` (whose attributes
            document each one); ``model`` is required, and ``data`` or the split files.

    Attributes:
        search_schedule: How much search trials train and evaluate (``max_length`` resolved).
        full_schedule: How much full-fidelity trials train and evaluate (``max_length``
            resolved).
        schedule: How much this objective's trials train and evaluate, before a budget:
            :attr:`search_schedule`, or :attr:`full_schedule` at a :attr:`fidelity`.
        fidelity: ``None`` as built (the settings say how much a trial does), or the budget
            of :meth:`at_fidelity`: a fraction of full fidelity.
        space: The searched space: :func:`~paretune.spaces.peft.peft_space` of the model's
            layout with ``space``'s options, then ``extra_space``.
        metrics: ``accuracy`` (maximize) and ``trainable_percent`` (minimize).
        layout: The model's layout, read from its config.
        settings: The settings this objective was built from, as given.
        validated: The same settings validated, defaults filled in.

    Raises:
        ConfigError: A setting is invalid, the model's config cannot be loaded, the model has
            no layers the PEFT space can address, or a data file does not exist; the path names
            the setting.
    """

    #: The metrics :meth:`known_values` gives before training (a controller may use them
    #: exactly instead of modelling them).
    known_metrics: tuple[str, ...] = KNOWN_METRICS

    def __init__(self, **settings: Any) -> None:
        try:
            validated = FinetuneSettings.model_validate(settings)
        except ValidationError as err:
            raise config_error(err) from None
        self.settings: dict[str, Any] = dict(settings)
        self.validated: FinetuneSettings = validated
        self.data_settings = validated.data_settings()
        check_sources(validated.data, self.data_settings.files)

        self.model_path: str = resolve_model(validated.model)
        self.config = load_config(self.model_path, validated.model)
        positions = getattr(self.config, "max_position_embeddings", None)
        positions = positions if isinstance(positions, int) and positions > 0 else None
        search, full = schedules(validated.fidelity, validated.full_fidelity)
        self.search_schedule, self.full_schedule = with_lengths(search, full, positions)
        self.schedule: Fidelity = self.search_schedule
        self.fidelity: float | None = None
        self.layout: ModelLayout = model_layout(self.config, validated.model)
        self.space: SearchSpace = searched_space(
            self.layout, validated.space, validated.extra_space
        )
        self.metrics: tuple[Metric, ...] = (
            Metric("accuracy", "maximize"),
            Metric("trainable_percent", "minimize"),
        )
        self._shared = Loaded(
            model=validated.model,
            model_path=self.model_path,
            layout=self.layout,
            data_settings=self.data_settings,
        )

    def __repr__(self) -> str:
        return (
            f"Finetune(model={self.validated.model!r}, fidelity={self.fidelity}, "
            f"schedule={self.schedule!r}, params={list(self.space.names)})"
        )

    # -- fidelity ---------------------------------------------------------------------------

    def at_fidelity(self, budget: float) -> Finetune:
        """The same objective at ``budget`` of full fidelity.

        ``1.0`` trains and evaluates as the ``full_fidelity`` settings say (every training,
        validation and test row unless they say otherwise); a smaller budget trains on that
        fraction of full fidelity's training rows (at least one), with its other values.
        The result shares this one's loaded data, tokenizer and weights within the process.

        Raises:
            ConfigError: ``budget`` is not a number in ``(0, 1]``.
        """
        budget = checked_budget(budget, _BUDGET_RULE)
        if budget == self.fidelity:
            return self
        twin = copy.copy(self)
        twin.settings = dict(self.settings)
        twin.schedule = self.full_schedule
        twin.fidelity = budget
        return twin

    # -- loading ----------------------------------------------------------------------------

    @property
    def data(self) -> LabelledData:
        """The labelled splits (read and checked on first use, then kept)."""
        return self._shared.load_data()

    @property
    def label_names(self) -> tuple[str, ...]:
        """The labels in id order (their sorted values, as strings)."""
        return self.data.label_names

    def prepare(self) -> None:
        """Load and check the data, the tokenizer and the weights now rather than in the first
        trial (each is loaded once per process)."""
        self._shared.counting()
        self._shared.load_base_model()

    def known_values(self, params: Mapping[str, Any]) -> dict[str, float]:
        """``trainable_params`` and ``trainable_percent`` of a candidate, as its trial will
        report them, from the params alone (the analytic count; nothing is trained or built).

        The first call reads the tokenizer and the labels (the task head's size depends on
        them); later calls take microseconds.
        """
        from paretune.spaces.peft import decode_params

        return count_metrics(analytic_count(self._shared, decode_params(params, self.layout)))

    # -- one trial --------------------------------------------------------------------------

    def trial_schedule(self, budget: float | None) -> Fidelity:
        """How much a trial at ``budget`` (``ctx.budget``) trains and evaluates: :attr:`schedule`
        on ``budget`` of its training rows (at least one); ``None``: :attr:`schedule`.

        Raises:
            ConfigError: ``budget`` is not a number in ``(0, 1]``.
        """
        if budget is None:
            return self.schedule
        return scaled(self.schedule, checked_budget(budget, _BUDGET_RULE), self.data.size("train"))

    def __call__(self, params: dict[str, Any], ctx: TrialContext) -> dict[str, float]:
        """Train and evaluate one candidate (the objective protocol).

        Returns:
            ``accuracy``, ``macro_f1`` and ``loss`` on the validation split (the last
            evaluation); ``test_accuracy``, ``test_macro_f1``, ``test_loss`` when there is a
            test split; ``trainable_params`` and ``trainable_percent`` (of the backbone;
            full fine-tuning is slightly above 100 because of the head); ``train_loss`` (mean
            over the steps since the previous evaluation); ``train_seconds`` (optimiser steps
            only), ``seconds_per_step``, ``eval_seconds``; ``peak_memory_mb`` (on CUDA the
            peak of ``torch.cuda.max_memory_allocated`` during training, on CPU the peak
            increase of the process's RSS over training, sampled every 20 ms); ``steps``,
            ``epochs`` and ``train_examples``.

        Raises:
            InvalidPeftConfig: The candidate has nothing to train (before anything loads).
            TrialPruned: The pruner stopped the trial after an evaluation.
            ConfigError: Bad parameter values, or a data or model problem found on loading.
            RuntimeError: Training diverged.
        """
        import torch

        from paretune.objectives.finetune._train import evaluate, train
        from paretune.spaces.peft import InvalidPeftConfig, decode_params

        plan = decode_params(params, self.layout)
        if not plan.is_valid:
            raise InvalidPeftConfig(
                "a PEFT candidate must put at least one module (nonzero size) into at least one "
                f"selected layer, but this one has {plan.describe()}; it was not trained."
            )
        device = self.validated.device or ctx.device
        hyper, lora_dropout = self.validated.for_trial(params, full=plan.full, device=device)
        schedule = self.trial_schedule(ctx.budget)  # the runner passes self.fidelity
        count = analytic_count(self._shared, plan)

        train_data, validation, test = self._shared.encoded(schedule)
        _, pad_id = self._shared.load_tokenizer()
        self._shared.load_base_model()
        started = time.perf_counter()
        model = self._shared.candidate_model(
            plan, seed=ctx.seed, device=device, lora_dropout=lora_dropout
        )
        check_materialised(model, count, plan)
        setup_seconds = time.perf_counter() - started
        _log.info(
            "trial %d: %s; %d trainable parameters (%.3f%%); %d train examples, %.2f epochs, "
            "lr %g%s, on %s",
            ctx.trial_number,
            plan.describe(),
            count.total,
            count.percent,
            len(train_data),
            schedule.epochs,
            hyper.learning_rate,
            _factors(hyper.lr_multipliers),
            device,
        )

        try:
            result = train(
                model,
                train_data=train_data,
                validation=validation,
                hyper=hyper,
                epochs=schedule.epochs,
                evals_per_epoch=schedule.evals_per_epoch,
                seed=ctx.seed,
                pad_id=pad_id,
                device=device,
                ctx=ctx,
            )
            metrics: dict[str, float] = {
                "accuracy": result.validation.accuracy,
                "macro_f1": result.validation.macro_f1,
                "loss": result.validation.loss,
            }
            if test is not None:
                started = time.perf_counter()
                tested = evaluate(
                    model,
                    test,
                    batch_size=hyper.eval_batch_size,
                    pad_id=pad_id,
                    device=device,
                    precision=hyper.precision,
                )
                metrics |= {
                    "test_accuracy": tested.accuracy,
                    "test_macro_f1": tested.macro_f1,
                    "test_loss": tested.loss,
                }
                test_seconds = time.perf_counter() - started
            else:
                test_seconds = 0.0
        finally:
            del model
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        metrics |= count_metrics(count) | {
            "train_loss": result.train_loss,
            "train_seconds": result.train_seconds,
            "seconds_per_step": result.train_seconds / result.steps,
            "eval_seconds": result.eval_seconds + test_seconds,
            "setup_seconds": setup_seconds,
            "peak_memory_mb": result.peak_memory_mb,
            "steps": float(result.steps),
            "epochs": result.epochs,
            "train_examples": float(len(train_data)),
        }
        _log.info(
            "trial %d done: validation accuracy %.4f%s in %.1f s of training",
            ctx.trial_number,
            metrics["accuracy"],
            f", test accuracy {metrics['test_accuracy']:.4f}" if test is not None else "",
            result.train_seconds,
        )
        return metrics


def _factors(multipliers: Mapping[str, float]) -> str:
    """`` (x lora 3, prefix 30)`` for the log line of a trial, or nothing without factors."""
    if not multipliers:
        return ""
    return " (x " + ", ".join(f"{k} {v:g}" for k, v in multipliers.items()) + ")"
