"""AutoPEFT search spaces: which PEFT modules go into which layers of a transformer, how big.

The search follows AutoPEFT (Zhou et al. 2023, TACL) on current ``transformers`` and ``peft``,
for encoders (BERT, RoBERTa, DistilBERT) and decoders (GPT-2, LLaMA-style models):

1. :func:`describe_model` reads a model (or a config) into a :class:`ModelLayout`: layers,
   widths, heads and the projections of each layer.
2. :func:`peft_space` builds the :class:`~paretune.spaces.SearchSpace`: serial adapter, parallel
   adapter and prefix sizes (AutoPEFT's list, rescaled to the hidden size), LoRA rank, alpha and
   targets, and layer switches shared by the modules or per module.
3. :func:`count_trainable` gives the trainable-parameter count and percentage from the params
   alone (the cost objective); :func:`materialize` builds the model to train, with exactly that
   many trainable parameters.

With ``full_finetune=True`` the space also offers full fine-tuning (``method: full``), the
reference a PEFT search is compared with.

A candidate is valid iff at least one module is in at least one layer (:func:`is_valid`);
:func:`materialize` raises :class:`InvalidPeftConfig` for the others before anything trains,
and :func:`repair` maps one to a close valid candidate.

Example:
    >>> from transformers import AutoModelForSequenceClassification  # doctest: +SKIP
    >>> model = AutoModelForSequenceClassification.from_pretrained(path)  # doctest: +SKIP
    >>> layout = describe_model(model.config)  # doctest: +SKIP
    >>> space = peft_space(layout, layer_selection="shared")  # doctest: +SKIP
    >>> params = space.suggest(trial)  # doctest: +SKIP
    >>> cost = count_trainable(layout, params, head_params=head_size).percent  # doctest: +SKIP
    >>> model = materialize(model, params, layout)  # doctest: +SKIP

``import paretune.spaces.peft`` does not import torch, transformers or peft; describing and
materialising a model do.
"""

from paretune.spaces.peft._count import TrainableCount, count_trainable
from paretune.spaces.peft._describe import PeftDescriber, describe_plan, layer_ranges
from paretune.spaces.peft._layout import ModelLayout, Projection, describe_model
from paretune.spaces.peft._materialize import (
    DEFAULT_HEAD_NAMES,
    MODULE_KINDS,
    materialize,
    module_kind,
    trainable_parameters,
)
from paretune.spaces.peft._plan import (
    MODULE_SWITCHES,
    InvalidPeftConfig,
    PeftPlan,
    decode_params,
    is_valid,
    layer_count,
    repair,
)
from paretune.spaces.peft._space import (
    AUTOPEFT_SIZES,
    LAYER_SELECTIONS,
    LORA_RANKS,
    LORA_TARGETS,
    METHOD_PARAM,
    METHODS,
    MODULES,
    lora_target_names,
    peft_space,
    scale_sizes,
)

__all__ = [
    "AUTOPEFT_SIZES",
    "DEFAULT_HEAD_NAMES",
    "LAYER_SELECTIONS",
    "LORA_RANKS",
    "LORA_TARGETS",
    "METHODS",
    "METHOD_PARAM",
    "MODULES",
    "MODULE_KINDS",
    "MODULE_SWITCHES",
    "InvalidPeftConfig",
    "ModelLayout",
    "PeftDescriber",
    "PeftPlan",
    "Projection",
    "TrainableCount",
    "count_trainable",
    "decode_params",
    "describe_model",
    "describe_plan",
    "is_valid",
    "layer_count",
    "layer_ranges",
    "lora_target_names",
    "materialize",
    "module_kind",
    "peft_space",
    "repair",
    "scale_sizes",
    "trainable_parameters",
]
