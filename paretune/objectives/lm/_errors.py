"""The lm objective's own error."""

from __future__ import annotations

from paretune._errors import ParetuneError

__all__ = ["Diverged"]


class Diverged(ParetuneError, RuntimeError):
    """The training loss became NaN or infinite (a learning rate past the edge of
    stability); the trial fails with the step it happened at."""
