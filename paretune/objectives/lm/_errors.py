"""The lm objective's own error."""

from __future__ import annotations

__all__ = ["Diverged"]


class Diverged(RuntimeError):
    """The training loss became NaN or infinite (a learning rate past the edge of
    stability); the trial fails with the step it happened at."""
