"""The base of every validated settings model (a spec section, a runner's settings)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    """Frozen, and unknown keys are errors that list the allowed keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            allowed = list(cls.model_fields)
            for key in data:
                if key not in allowed:
                    raise ValueError(f"unknown key {key!r}; allowed keys: {', '.join(allowed)}")
        return data
