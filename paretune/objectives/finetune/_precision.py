"""The ``precision`` setting: fp32, or bfloat16 autocast where the device computes it fast."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

__all__ = ["Precision", "resolve_precision"]

#: The values of the ``precision`` setting.
Precision = Literal["fp32", "bf16", "auto"]


def resolve_precision(precision: str, device: str) -> str:
    """``"fp32"`` or ``"bf16"`` for a ``precision`` setting on ``device`` (see ``Finetune``)."""
    if precision != "auto":
        return precision
    import torch

    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.startswith("cpu") and _cpu_has_bf16_instructions() else "fp32"


@functools.cache
def _cpu_has_bf16_instructions() -> bool:
    """Whether this machine's CPU flags (Linux ``/proc/cpuinfo``) list AVX512-BF16 or AMX-BF16."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.partition(":")[2].split()))
