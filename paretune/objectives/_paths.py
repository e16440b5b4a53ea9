"""Where objectives find their data files: the working directory, then ``$PARETUNE_DATA_DIR``."""

from __future__ import annotations

import os
from pathlib import Path

from paretune._errors import ConfigError

__all__ = ["DATA_DIR_ENV", "resolve_file"]

DATA_DIR_ENV = "PARETUNE_DATA_DIR"
"""Relative data paths that are not found under the working directory are looked up here."""


def resolve_file(value: str, setting: str) -> Path:
    """The data file ``value`` names: absolute, or relative to the working directory, or
    relative to ``$PARETUNE_DATA_DIR``, tried in that order.

    Raises:
        ConfigError: No such file; the message names every place tried (path ``setting``).
    """
    path = Path(value).expanduser()
    if path.is_absolute():
        if path.is_file():
            return path
        raise ConfigError(f"the data file {str(path)!r} does not exist.", path=(setting,))
    tried = [Path.cwd() / path]
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        tried.append(Path(data_dir).expanduser() / path)
    for candidate in tried:
        if candidate.is_file():
            return candidate.resolve()
    places = f"{str(tried[0])!r} (relative to the working directory)"
    if data_dir:
        places += f" and {str(tried[1])!r} (relative to ${DATA_DIR_ENV})"
    else:
        places += f"; ${DATA_DIR_ENV} is not set, so no data directory was tried"
    raise ConfigError(f"cannot find the data file {value!r}: tried {places}.", path=(setting,))
