"""The ``mutransfer`` section of a spec: which widths, which grid, which checks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from paretune._errors import ConfigError
from paretune._validation import FieldError, config_error
from paretune.spec._sections import _Strict

__all__ = [
    "CoordCheckSpec",
    "LRGridSpec",
    "MuTransferSpec",
    "check_search_keys",
    "mutransfer_json_schema",
    "section_of",
]


class LRGridSpec(_Strict):
    """The proxy sweep's learning rates: ``2**low, 2**(low + step), ..., 2**high``.

    With ``mutransfer.lr_prior: steplaw`` the grid is centred on Step Law's learning rate for
    the widest proxy instead (``octaves`` either side), and ``low``/``high`` must be left out.

    Attributes:
        low: The smallest log2 learning rate.
        high: The largest log2 learning rate.
        step: The grid step in octaves (0.5: half an octave, a factor of sqrt(2)).
        octaves: With ``lr_prior: steplaw``, the grid's half-width in octaves.
    """

    low: float | None = None
    high: float | None = None
    step: PositiveFloat = 0.5
    octaves: PositiveFloat = 2.0

    @model_validator(mode="after")
    def _ordered(self) -> LRGridSpec:
        if (self.low is None) != (self.high is None):
            raise FieldError("give both `low` and `high` (log2 learning rates), or neither.",
                             path=("high",))  # fmt: skip
        if self.low is not None and self.high is not None and self.low > self.high:
            raise FieldError(
                f"`low` must be <= `high`, but got low={self.low:g}, high={self.high:g}.",
                path=("low",),
            )
        return self

    def points(self, centre: float | None = None) -> list[float]:
        """The grid's log2 learning rates, ascending (around ``centre`` when given)."""
        if centre is not None:
            half = math.floor(self.octaves / self.step + 1e-9)
            snapped = round(centre / self.step) * self.step
            return [snapped + k * self.step for k in range(-half, half + 1)]
        if self.low is None or self.high is None:
            raise ConfigError(
                "a grid without low and high needs a centre (lr_prior: steplaw).",
                path=("lr_grid",),
            )
        count = math.floor((self.high - self.low) / self.step + 1e-9)
        return [self.low + k * self.step for k in range(count + 1)]


class CoordCheckSpec(_Strict):
    """The coordinate check that opens the workflow (``paretune coord-check``'s settings).

    Attributes:
        enabled: Run it (a failure stops the workflow before any proxy trains).
        widths: The widths checked; default the proxies' and the targets'.
        steps: Adam steps before measuring.
        seeds: Seeds per width.
        learning_rate: The constant learning rate of those steps.
        tolerance: The largest ``|slope|`` that passes.
    """

    enabled: bool = True
    widths: list[PositiveInt] | None = Field(default=None, min_length=2)
    steps: PositiveInt = 4
    seeds: PositiveInt = 2
    learning_rate: PositiveFloat = 3e-3
    tolerance: PositiveFloat = 0.1


class MuTransferSpec(_Strict):
    """The muTransfer workflow of ``paretune mutransfer`` (the objective must be ``lm``).

    Steps, all in the spec's one study and one MLflow parent run, width and seed recorded as
    parameters of every trial:

    1. the coordinate check (:class:`CoordCheckSpec`);
    2. the proxy search at each of ``proxy_widths``: ``search: grid`` sweeps ``lr_grid``;
       ``independent`` (u-muP's) sweeps ``lr_grid``, then each of ``multipliers`` alone at the
       learning rate found; ``controller`` lets the spec's controller propose
       ``controller_trials`` candidates per proxy width within the study's learning-rate range
       (the grid's, widened by the ``verify`` factors) and the multipliers' ranges;
    3. the transfer check: the best hyperparameters per proxy width side by side, with a
       warning where the best learning rate moves by more than one grid step;
    4. the target run(s) at ``target_widths`` with the chosen hyperparameters, and the
       verification sweep around them (``verify``: learning-rate factors; 1 is the target run).

    Every cell of a grid runs once per seed of ``seeds`` (paired: a seed fixes the
    initialisation's draws and the data order).

    Attributes:
        proxy_widths: The narrow widths the search runs at.
        target_widths: The wide widths the chosen hyperparameters are carried to.
        seeds: Seeds of every cell.
        lr_grid: The learning rates of the proxy sweep.
        lr_prior: ``steplaw`` centres the grid on Step Law's learning rate
            (:mod:`paretune.search.steplaw`) for the widest proxy; ``none`` uses ``low``/``high``.
        search: ``grid``, ``independent`` or ``controller``.
        multipliers: Per multiplier (``output_multiplier``, ``attention_multiplier``,
            ``init_std``), its values: swept one at a time at the chosen learning rate
            (``independent``), or the range the controller searches (``controller``).
        controller_trials: Candidates per proxy width in ``controller`` mode.
        verify: Learning-rate factors run at each target width around the chosen rate (kept
            within the study's learning-rate range).
        coord_check: The coordinate check.
    """

    proxy_widths: list[PositiveInt] = Field(min_length=1)
    target_widths: list[PositiveInt] = Field(min_length=1)
    seeds: list[NonNegativeInt] = Field(default_factory=lambda: [0], min_length=1)
    lr_grid: LRGridSpec = Field(default_factory=LRGridSpec)
    lr_prior: Literal["none", "steplaw"] = "none"
    search: Literal["grid", "independent", "controller"] = "grid"
    multipliers: dict[
        Literal["output_multiplier", "attention_multiplier", "init_std"],
        list[PositiveFloat],
    ] = Field(default_factory=dict)
    controller_trials: PositiveInt | None = None
    verify: list[PositiveFloat] = Field(default_factory=lambda: [0.5, 1.0, 2.0], min_length=1)
    coord_check: CoordCheckSpec = Field(default_factory=CoordCheckSpec)

    @model_validator(mode="after")
    def _consistent(self) -> MuTransferSpec:
        if max(self.proxy_widths) >= min(self.target_widths):
            raise FieldError(
                f"every proxy must be narrower than every target, but got proxy_widths "
                f"{self.proxy_widths} and target_widths {self.target_widths}.",
                path=("target_widths",),
            )
        if len(set(self.seeds)) != len(self.seeds):
            raise FieldError(f"seeds must differ, but got {self.seeds}.", path=("seeds",))
        has_range = self.lr_grid.low is not None
        if self.lr_prior == "steplaw" and has_range:
            raise FieldError(
                "with lr_prior: steplaw the grid is centred on Step Law's learning rate; "
                "leave out lr_grid.low and lr_grid.high (lr_grid.octaves sets its width).",
                path=("lr_grid", "low"),
            )
        if self.lr_prior == "none" and not has_range:
            raise FieldError(
                "give lr_grid.low and lr_grid.high (log2 learning rates, e.g. -12 and -6), or "
                "lr_prior: steplaw.",
                path=("lr_grid",),
            )
        if self.search == "controller" and self.controller_trials is None:
            raise FieldError(
                "search: controller needs controller_trials (candidates per proxy width).",
                path=("controller_trials",),
            )
        if self.search == "grid" and self.multipliers:
            raise FieldError(
                "search: grid sweeps the learning rate only; use search: independent to sweep "
                "multipliers too.",
                path=("multipliers",),
            )
        for name, values in self.multipliers.items():
            if len(values) < 2:
                raise FieldError(
                    f"a swept multiplier needs two or more values, but got {values}.",
                    path=("multipliers", name),
                )
        return self

    @property
    def widths(self) -> list[int]:
        """Every width of the workflow, ascending."""
        return sorted({*self.proxy_widths, *self.target_widths})


def mutransfer_json_schema() -> dict[str, Any]:
    """The JSON schema of a muTransfer spec: a search spec's keys with a required
    ``mutransfer`` section, no ``space`` or ``enqueue`` (the workflow builds them) and a budget
    that only holds the per-trial rules (the workflow sets the trials)."""
    return workflow_json_schema(
        MuTransferSpec, "mutransfer", drop=("space", "enqueue"), title="paretune mutransfer"
    )


def workflow_json_schema(
    section: type[BaseModel], key: str, *, drop: Sequence[str], title: str
) -> dict[str, Any]:
    """The JSON schema of a workflow's spec (``paretune mutransfer``, ``paretune dac``): a
    search spec's keys without ``drop``, with the required ``key`` section validated by
    ``section``, and a budget that is optional (the workflow sets its length)."""
    from paretune.spec._search import SearchSpec

    schema = SearchSpec.model_json_schema()
    own = section.model_json_schema()
    schema.setdefault("$defs", {}).update(own.pop("$defs", {}))
    schema["$defs"][section.__name__] = own
    properties = schema["properties"]
    for name in drop:
        properties.pop(name, None)
    properties[key] = {"$ref": f"#/$defs/{section.__name__}"}
    schema["required"] = [k for k in schema.get("required", []) if k != "budget"] + [key]
    schema["title"] = f"{section.__name__} ({title})"
    return schema


def section_of(data: Mapping[str, Any]) -> MuTransferSpec:
    """The spec's ``mutransfer`` section, validated.

    Raises:
        ConfigError: It is missing or invalid (the path names the field).
    """
    raw = data.get("mutransfer")
    if raw is None:
        raise ConfigError(
            "the spec has no `mutransfer` section (proxy_widths, target_widths, lr_grid, ...).",
            path=("mutransfer",),
        )
    try:
        return MuTransferSpec.model_validate(raw)
    except ValidationError as err:
        raise config_error(err).prefixed("mutransfer") from None


def check_search_keys(base: Mapping[str, Any]) -> None:
    """Refuse the search-spec keys the workflow sets itself: the budget's trials and wall
    time, a pruner, the space and the queued trials.

    Raises:
        ConfigError: One is given (the path names it).
    """
    budget = base.get("budget")
    if isinstance(budget, Mapping):
        for key in ("trials", "wall_time"):
            if key in budget:
                raise ConfigError(
                    "the muTransfer workflow runs every cell of its grids once, so it sets the "
                    f"budget's trials itself; remove budget.{key} (trial_timeout and "
                    "max_retries are kept).",
                    path=("budget", key),
                )
    pruner = base.get("pruner")
    if isinstance(pruner, Mapping) and pruner.get("name", "none") != "none":
        raise ConfigError(
            "a pruned cell would count as a loss it never reached; the muTransfer workflow "
            "runs without a pruner.",
            path=("pruner", "name"),
        )
    for key in ("space", "enqueue"):
        if key in base:
            raise ConfigError(
                f"the muTransfer workflow builds the {key} from the `mutransfer` section; "
                f"remove `{key}` from the spec.",
                path=(key,),
            )
