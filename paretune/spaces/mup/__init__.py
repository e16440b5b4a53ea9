"""muP for ``transformers`` decoders, applied without editing the model's code.

Maximal update parametrization (Yang et al. 2021, Tensor Programs V) makes the best learning
rate, initialisation and multipliers of a narrow proxy the best of the wide target, so they
are tuned where runs are cheap and carried over (muTransfer). Here width is a config setting
grown by attention heads at a fixed head dimension (:func:`width_config`), and
:func:`parametrize` applies the rules to a model built from such a config: it initialises the
parameters again, installs the output and attention multipliers, and returns the
:class:`Parametrization` whose :meth:`~Parametrization.param_groups` give Adam its
per-group learning rates. ``kind="sp"`` applies standard parametrization with the same
knobs, for comparison. :func:`transfer_space` is the search space of what transfers.

Example:
    >>> from transformers import LlamaConfig, LlamaForCausalLM  # doctest: +SKIP
    >>> config = width_config(LlamaConfig(hidden_size=64, num_attention_heads=2,
    ...     intermediate_size=256, vocab_size=256, tie_word_embeddings=False), 512)
    >>> model = LlamaForCausalLM(config)  # doctest: +SKIP
    >>> rules = parametrize(model, base_width=64, kind="mup", output_multiplier=2.0)
    >>> optimizer = torch.optim.AdamW(rules.param_groups(model, lr=3e-3))  # doctest: +SKIP

Supported and tested: LLaMA and GPT-2 with an untied readout, under Adam and AdamW (the
rules for SGD differ). Decoders built like LLaMA (Mistral, Qwen2: the same config keys, norms
whose weight starts at 1) should work the same way; Gemma-style norms stored as ``1 + w`` would
be initialised wrongly. u-muP (unit scaling) is not provided.

``import paretune.spaces.mup`` imports torch; roles are found with ``transformers`` models
built on the meta device.
"""

from paretune.spaces.mup._readout import MuReadout
from paretune.spaces.mup._rules import PARAMETRIZATIONS, ROLES, Parametrization, parametrize
from paretune.spaces.mup._space import NOT_TRANSFERABLE, TRANSFERABLE, transfer_space
from paretune.spaces.mup._widths import config_width, head_dim, width_config

__all__ = [
    "NOT_TRANSFERABLE",
    "PARAMETRIZATIONS",
    "ROLES",
    "TRANSFERABLE",
    "MuReadout",
    "Parametrization",
    "config_width",
    "head_dim",
    "parametrize",
    "transfer_space",
    "width_config",
]
