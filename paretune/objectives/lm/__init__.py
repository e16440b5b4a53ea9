"""Pretrain a decoder from scratch: the objective of muTransfer and of learning-rate studies.

Each trial builds a ``transformers`` decoder (LLaMA-style or GPT-2) from its shape: width,
depth, head dimension, MLP ratio, sequence length. It is parametrised in muP or in standard
parametrization (:mod:`paretune.spaces.mup`) and trained with AdamW under a schedule from
:mod:`paretune.spaces.schedules` on a text corpus. The trial returns its validation loss and
what it cost. The objective type is ``lm``::

    objective:
      type: lm
      settings:
        architecture: llama          # or gpt2
        width: 256                   # hidden size, grown by heads of head_dim
        base_width: 64               # muP equals SP here
        depth: 2
        head_dim: 16
        parametrization: mup         # or sp
        steps: 1000                  # or tokens: 2_000_000
        batch_size: 16
        sequence_length: 64
        schedule: {type: wsd, warmup_fraction: 0.05, decay_fraction: 0.2}
        max_grad_norm: 1.0
        seed: 0                      # paired seeds; null: the trial's seed
        data: [lm_corpus/austen.txt.gz]

The settings are one pydantic model, :class:`LMSettings` (each documented there); an invalid
one is a :class:`~paretune.ConfigError` located at the setting.

Data:
    Text files (plain or compressed), found under the working directory, then under
    ``$PARETUNE_DATA_DIR``; by default Jane Austen's novels from the workplace's data
    directory. Tokens are UTF-8 bytes by default (vocabulary 256), or a ``transformers``
    tokenizer's (``tokenizer:`` a hub name or directory). The last ``validation_fraction`` of
    each file is held out; validation evaluates ``eval_windows`` evenly spaced windows, the
    same for every run. Training windows are drawn at random from the rest.

Paired seeds:
    The initialisation and the order of the training windows depend on the seed alone, so
    two runs with one seed (a ``seed`` setting or a ``seed`` parameter) differ only in what
    is swept: learning rate, width, parametrization. Without one, a trial uses its own seed.

Training:
    AdamW (betas 0.9, 0.95), one parameter group per muP role
    (:meth:`~paretune.spaces.mup.Parametrization.param_groups`): hidden matrices at
    ``learning_rate / (width / base_width)`` under muP. Gradients are clipped at
    ``max_grad_norm``. Every group's LR is its initial LR times the schedule's factor, so the
    multipliers hold at every step. A NaN or infinite training loss stops the trial with
    :class:`Diverged` (the runner records a failed trial).

Results:
    ``val_loss`` (the optimised metric, nats per token), ``train_loss`` (the mean of the last
    tenth of the steps), ``tokens``, ``flops`` (``6 N D`` plus attention, Kaplan et al. 2020),
    ``non_embedding_params``, ``seconds``, ``steps``, ``width`` and ``log2_lr``. ``settings.evals``
    evaluations go to ``ctx.report(step, {"val_loss", "train_loss", "lr"})``; a pruner's
    request stops the trial there.

Searched parameters and fidelity:
    Parameters named after a setting (:data:`OVERRIDABLE`: ``learning_rate``,
    ``init_std``, ``output_multiplier``, ``attention_multiplier``, ``warmup_fraction``,
    ``decay_fraction``,
    ``width``, ``seed``...) override it for one trial; the ``space`` setting declares them
    in the spec's format (default: the learning rate on a log range). With
    ``width_fidelity: true`` a budget scales the width (:meth:`LM.at_fidelity`), so a
    multi-fidelity controller treats width as fidelity.

:func:`coordinate_check` trains a few steps at several widths and measures whether every
module's activations keep their size (``paretune coord-check``).
"""

from paretune.objectives.lm._coord import (
    COORD_CHECK_LEARNING_RATE,
    COORD_CHECK_SEEDS,
    COORD_CHECK_STEPS,
    COORD_CHECK_TOLERANCE,
    COORD_CHECK_WIDTHS,
    CoordCheck,
    coordinate_check,
)
from paretune.objectives.lm._errors import Diverged
from paretune.objectives.lm._objective import LM
from paretune.objectives.lm._settings import DEFAULT_DATA, OVERRIDABLE, LMSettings
from paretune.objectives.lm._shape import ARCHITECTURES, Shape

__all__ = [
    "ARCHITECTURES",
    "COORD_CHECK_LEARNING_RATE",
    "COORD_CHECK_SEEDS",
    "COORD_CHECK_STEPS",
    "COORD_CHECK_TOLERANCE",
    "COORD_CHECK_WIDTHS",
    "DEFAULT_DATA",
    "LM",
    "OVERRIDABLE",
    "CoordCheck",
    "Diverged",
    "LMSettings",
    "Shape",
    "coordinate_check",
]
