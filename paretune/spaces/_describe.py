"""Short readable names of candidates: what a reviewer reads in a run list (MLflow, logs)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

__all__ = ["compact_params", "short_value"]

#: Parameters :func:`compact_params` shows before it counts the rest (``+3``).
DEFAULT_LIMIT = 4
# A categorical value longer than this is cut (a run name is read at a glance).
_MAX_TEXT = 16


def short_value(value: Any) -> str:
    """``value`` in few characters: floats to 3 significant digits (``0.0316`` as ``3.16e-2``),
    integers whole, booleans ``on``/``off``, text cut to 16 characters.

    Example:
        >>> [short_value(v) for v in (0.000316, 12.3456, 256, True, "qkvo+ffn")]
        ['3.16e-4', '12.3', '256', 'on', 'qkvo+ffn']
    """
    if isinstance(value, (bool, np.bool_)):
        return "on" if value else "off"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        x = float(value)
        if not math.isfinite(x) or x == 0 or 1e-2 <= abs(x) < 1e4:
            return f"{x:.3g}"
        mantissa, exponent = f"{x:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    text = str(value)
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "~"


def compact_params(
    params: Mapping[str, Any], *, limit: int = DEFAULT_LIMIT, skip: Collection[str] = ()
) -> str:
    """``k=v`` of the first ``limit`` params (in their order, ``skip`` left out), values by
    :func:`short_value`, and ``+N`` for the ``N`` not shown; ``""`` for no params.

    The default name of a candidate (:meth:`~paretune.spaces.SearchSpace.describe`), and the
    tail a domain's own describer adds for the parameters it does not know.

    Example:
        >>> compact_params({"lr": 0.00316, "rank": 8, "module": "lora", "alpha": 2.0, "wd": 0.1})
        'lr=3.16e-3 rank=8 module=lora alpha=2 +1'
    """
    shown = [(k, v) for k, v in params.items() if k not in skip]
    parts = [f"{k}={short_value(v)}" for k, v in shown[:limit]]
    if len(shown) > limit:
        parts.append(f"+{len(shown) - limit}")
    return " ".join(parts)
