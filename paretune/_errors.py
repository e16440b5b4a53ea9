"""The exceptions paretune raises.

Every error paretune raises on purpose derives from :class:`ParetuneError`. Errors caused by what
a user wrote (a spec, a space, an argument) are :class:`ConfigError`, which is also a
``ValueError``; errors of the running system (a storage that cannot be opened, a study that does
not match its spec) are :class:`StudyError`, which is also a ``RuntimeError``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["ConfigError", "ParetuneError", "SearchFailed", "StudyError", "StudyNotFound"]


class ParetuneError(Exception):
    """Base class of every error paretune raises on purpose."""


class ConfigError(ParetuneError, ValueError):
    """User input that paretune cannot accept.

    Args:
        message: What is wrong and how to fix it.
        path: Where in the user's input the problem is, outermost key first, for example
            ``("space", "lr", "low")``. Empty when the input as a whole is at fault.
    """

    def __init__(self, message: str, *, path: Sequence[str | int] = ()) -> None:
        self.path: tuple[str | int, ...] = tuple(path)
        self.message = message
        super().__init__(f"{format_path(self.path)}: {message}" if self.path else message)

    def prefixed(self, *outer: str | int) -> ConfigError:
        """The same error located inside ``outer`` (used when a nested validator re-raises)."""
        return type(self)(self.message, path=(*outer, *self.path))


class StudyError(ParetuneError, RuntimeError):
    """A problem of the running system: storage, tracking server, a study that does not fit."""


class StudyNotFound(StudyError):
    """A study that must exist (to read it, to resume it) does not."""


class SearchFailed(ParetuneError, RuntimeError):
    """A search stopped because its trials kept failing (``budget.max_failures_in_a_row``)."""


def format_path(path: Sequence[str | int]) -> str:
    """Render ``("a", 0, "b")`` as ``a[0].b``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def describe(value: Any) -> str:
    """A short, quoted rendering of a user's value for an error message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# What a store's first-time setup raises when another process sets the same store up at the
# same moment: PostgreSQL's CREATE TYPE/TABLE of Optuna's schema, MLflow's alembic migration of
# a fresh database, two creations of one MLflow experiment, SQLite's lock.
_SETUP_RACES = (
    "already exists",
    "uniqueviolation",
    "integrityerror",
    "online migration expected",
    "database is locked",
)


def is_setup_race(err: BaseException) -> bool:
    """Whether ``err`` looks like losing a race to set up a store, worth one more try."""
    text = f"{type(err).__name__} {err}".lower()
    return any(marker in text for marker in _SETUP_RACES)


def retry_setup_race(open_store: Callable[[], T], *, attempts: int = 5) -> T:
    """``open_store()``, tried again (with a short pause) while it loses a setup race to
    another process; any other error, or the last attempt's, propagates."""
    for attempt in range(1, attempts + 1):
        try:
            return open_store()
        except Exception as err:
            if attempt == attempts or not is_setup_race(err):
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")
