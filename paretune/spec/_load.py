"""Reading a spec: YAML or a mapping, ``--set`` overrides, plugins, validation."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from paretune._errors import ConfigError, describe
from paretune._validation import config_error
from paretune.objectives import load_module
from paretune.search import runner_settings
from paretune.spec._search import SearchSpec

__all__ = ["apply_overrides", "load_plugins", "load_spec", "read_spec"]


def load_spec(
    source: str | Path | Mapping[str, Any],
    *,
    overrides: Sequence[str] = (),
    resolve: bool = True,
) -> SearchSpec:
    """Read, validate and resolve a spec.

    Args:
        source: A path to a YAML file, or the already-parsed mapping.
        overrides: ``"dotted.key=value"`` changes applied before validation (the CLI's
            ``--set``); the value is read as YAML (``3``, ``true``, ``[q, v]``, ``null``), and a
            list item is addressed by its index (``enqueue.0.label=...``).
        resolve: Build the objective and resolve the space, metrics and reference point
            (``False``: only read the spec, for looking at an existing study; a muTransfer
            workflow's spec then reads as the search spec of the workflow's one study).

    Returns:
        The validated spec.

    Raises:
        ConfigError: The file cannot be read or parsed, or the spec is invalid; ``path`` names
            the field.
    """
    data = read_spec(source, overrides=overrides)
    if "mutransfer" in data and not resolve:
        # The workflow sets each stage's trial budget; reading its study needs none (a wall
        # time stands in, which only a search would use).
        budget = {**dict(data.get("budget") or {}), "trials": None, "wall_time": 1.0}
        data = {**{k: v for k, v in data.items() if k != "mutransfer"}, "budget": budget}
    if "dac" in data and not resolve:
        # A DAC run's study read as a search's: its length is dac.episodes.
        budget = {**dict(data.get("budget") or {}), "trials": None, "wall_time": 1.0}
        data = {**{k: v for k, v in data.items() if k != "dac"}, "budget": budget}
    if "dac" in data:
        raise ConfigError(
            "a spec with a `dac` section trains a policy: run it with `paretune dac SPEC`.",
            path=("dac",),
        )
    if "mutransfer" in data:
        raise ConfigError(
            "a spec with a `mutransfer` section is a muTransfer workflow: run it with "
            "`paretune mutransfer SPEC`.",
            path=("mutransfer",),
        )
    plugins = data.get("plugins") or []
    if not (isinstance(plugins, list) and all(isinstance(p, str) for p in plugins)):
        raise ConfigError(
            f"must be a list of modules or files, but got {describe(plugins)}", path=("plugins",)
        )
    load_plugins(plugins)
    try:
        # The runner section is validated by the model its type registered.
        data = {**data, "runner": runner_settings(data.get("runner") or {})}
    except ValidationError as err:
        raise config_error(err).prefixed("runner") from None
    try:
        spec = SearchSpec.model_validate(data)
    except ValidationError as err:
        raise config_error(err) from None
    if resolve:
        spec._resolve()
    _check_numbers(spec)
    return spec


def read_spec(
    source: str | Path | Mapping[str, Any], *, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """A spec's mapping, read from YAML (or given) with ``overrides`` applied, not validated.

    Raises:
        ConfigError: The file cannot be read or parsed, or it is not a mapping.
    """
    import yaml

    if isinstance(source, Mapping):
        data: Any = dict(source)
        origin = None
    else:
        origin = Path(source)
        try:
            text = origin.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read spec file {str(origin)!r}: {err.strerror}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            problem = getattr(err, "problem", None) or str(err)
            raise ConfigError(f"{origin} is not valid YAML{line}: {problem}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"a spec must be a mapping of keys (study, objective, budget, ...), but got "
            f"{type(data).__name__}"
        )
    data = apply_overrides(data, overrides)
    return data


def load_plugins(names: Sequence[str]) -> None:
    """Import each module (``my_pkg.plugin``) or file (``plugin.py``, relative to the working
    directory) once: what it registers (controllers, runners, objective types) is then usable.

    Raises:
        ConfigError: A module or file cannot be found (path ``plugins[i]``).
    """
    for i, name in enumerate(names):
        try:
            load_module(name)
        except ConfigError as err:
            raise ConfigError(err.message, path=("plugins", i)) from None


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A deep copy of ``data`` with each ``"dotted.key=value"`` set (see :func:`load_spec`).

    Raises:
        ConfigError: An override is not ``key=value``, or its path runs through a value that is
            not a mapping or list, or through a list index out of range.
    """
    import copy

    import yaml

    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(
                f"an override must look like `objective.settings.epochs=2`, but got {item!r}"
            )
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        node: Any = out
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        f"override {item!r}: {where!r} must be an index below {len(node)}"
                    )
                index = int(part)
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}  # a new (or empty) section
                    node = node[part]
            else:
                raise ConfigError(
                    f"override {item!r}: {'.'.join(parts[:depth])!r} is "
                    f"{describe(node)}, not a section"
                )
    return out


def _check_numbers(spec: SearchSpec) -> None:
    if spec.objective.reference_point:
        for key, value in spec.objective.reference_point.items():
            if not math.isfinite(value):
                raise ConfigError(
                    f"must be finite, but got {value}", path=("objective", "reference_point", key)
                )
