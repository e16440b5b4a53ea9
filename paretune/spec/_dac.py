"""``paretune dac``: train a policy for an objective's dynamic parameter, episodes as the trials
of one study, then evaluate it on held-out instances (:class:`DACSpec` describes it).

A DAC spec is a search spec (study, storage, tracking, objective, runner, budget's per-trial
rules) with a ``dac`` section instead of a space and a trial budget::

    study: dac-quadratic
    objective:
      type: noisy_quadratic
      settings: {learning_rate: 0.1, dynamic: {actions: [0.5, 1, 2], interval: 20}}
    dac:
      instances: {seed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}
      held_out: {seed: [100, 101, 102]}
      episodes: 240
      batch: 8
      algorithm: ppo
      policy: {features: [progress, log2_value]}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt, ValidationError

from paretune._errors import ConfigError
from paretune._validation import StrictModel, config_error
from paretune.spec._load import load_spec, read_spec

__all__ = ["DACSpec", "dac_json_schema", "dac_section_of", "run_dac_spec"]


class DACSpec(StrictModel):
    """The ``dac`` section of a spec.

    Attributes:
        instances: The training instances: a list of parameter sets the objective takes
            (``[{seed: 0}, {seed: 1}]``), or a mapping of equally long lists zipped into one
            (``{seed: [0, 1], noise: [0.5, 2.0]}``).
        held_out: Instances the trained policy is evaluated on, in the same forms.
        episodes: Training episodes (each one run of the objective).
        batch: Episodes per policy update.
        algorithm: ``reinforce`` or ``ppo``.
        trainer: :class:`~paretune.search.dac.PolicyTrainer` options: ``lr``, ``entropy``,
            ``baseline_decay``, ``epochs``, ``clip``.
        policy: :class:`~paretune.search.dac.Policy` options: ``features``, ``hidden``,
            ``levels``, ``hold_bias``.
        seed: Seeds the policy's initialisation and its draws.
        static: Also evaluate the held-out instances with the parameter held (the static
            reference the policy is compared with, paired).
        policy_path: Where the policy is saved; default ``policy.json`` in the run directory.
        start_from: A saved policy to continue training from (a file or MLflow artifact URI).
    """

    instances: list[dict[str, Any]] | dict[str, list[Any]]
    held_out: list[dict[str, Any]] | dict[str, list[Any]] = Field(default_factory=list)
    episodes: PositiveInt
    batch: PositiveInt = 8
    algorithm: Literal["reinforce", "ppo"] = "ppo"
    trainer: dict[str, Any] = Field(default_factory=dict)
    policy: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    static: bool = True
    policy_path: Path | None = None
    start_from: str | None = None


def instance_list(value: Any, path: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    """Instances in their list form.

    Raises:
        ConfigError: The lists of the mapping form differ in length.
    """
    if isinstance(value, Mapping):
        lengths = {k: len(v) for k, v in value.items()}
        if len(set(lengths.values())) > 1:
            raise ConfigError(
                f"the lists of an instance mapping are zipped, so they must be equally long, "
                f"but got lengths {lengths}.",
                path=path,
            )
        n = next(iter(lengths.values()), 0)
        return tuple({k: value[k][i] for k in value} for i in range(n))
    return tuple(dict(v) for v in value)


def dac_json_schema() -> dict[str, Any]:
    """The JSON schema of a DAC spec: a search spec's keys with a required ``dac`` section, no
    ``space``, ``enqueue`` or ``controller`` (the run queues its episodes) and a budget that
    only holds the per-episode rules (``dac.episodes`` sets the length)."""
    from paretune.spec._mutransfer_section import workflow_json_schema

    return workflow_json_schema(
        DACSpec, "dac", drop=("space", "enqueue", "controller"), title="paretune dac"
    )


def dac_section_of(data: Mapping[str, Any]) -> DACSpec:
    """The spec's ``dac`` section, validated.

    Raises:
        ConfigError: It is missing or invalid (the path names the field).
    """
    raw = data.get("dac")
    if raw is None:
        raise ConfigError(
            "the spec has no `dac` section (instances, episodes, ...).", path=("dac",)
        )
    try:
        return DACSpec.model_validate(raw)
    except ValidationError as err:
        raise config_error(err).prefixed("dac") from None


def run_dac_spec(
    source: str | Path | Mapping[str, Any],
    *,
    overrides: Sequence[str] = (),
    resume: bool = False,
    progress: Any = None,
    on_start: Any = None,
) -> Any:
    """Train and evaluate the policy a DAC spec describes (:func:`paretune.search.dac.run_dac`).

    Returns:
        The :class:`~paretune.search.dac.DACResult`.

    Raises:
        ConfigError: The spec is invalid, or its objective has no dynamic parameter.
    """
    from paretune.search.dac import DACPlan, dac_space, load_policy, run_dac

    data = read_spec(source, overrides=overrides)
    section = dac_section_of(data)
    base = {k: v for k, v in data.items() if k != "dac"}
    for key in ("space", "enqueue", "controller"):
        if key in base:
            raise ConfigError(
                f"a DAC run queues its own episodes, so it takes no `{key}`; remove it.",
                path=(key,),
            )
    budget = dict(base.get("budget") or {})
    if "trials" in budget or "wall_time" in budget:
        raise ConfigError(
            "a DAC run's length is dac.episodes; remove budget.trials and budget.wall_time.",
            path=("budget",),
        )
    base["budget"] = {**budget, "trials": section.episodes}
    spec = load_spec(base)
    objective = spec._objective
    assert objective is not None  # load_spec resolves it
    param = objective.dynamic
    if param is None:
        raise ConfigError(
            f"objective {spec.objective.type!r} has no dynamic parameter to control; give it "
            "one (the lm and noisy_quadratic objectives take a `dynamic` setting).",
            path=("objective", "settings", "dynamic"),
        )
    if len(spec.metrics) != 1:
        raise ConfigError(
            f"a DAC run rewards one metric, but the objective optimises "
            f"{[m.name for m in spec.metrics]}; name one in objective.metrics.",
            path=("objective", "metrics"),
        )
    instances = instance_list(section.instances, ("dac", "instances"))
    held_out = instance_list(section.held_out, ("dac", "held_out"))
    if not instances:
        raise ConfigError("give at least one training instance.", path=("dac", "instances"))
    for where, group in (("instances", instances), ("held_out", held_out)):
        for i, inst in enumerate(group):
            allowed = objective.overridable
            unknown = sorted(set(inst) - set(allowed)) if allowed is not None else []
            if unknown:
                raise ConfigError(
                    f"instance parameter {unknown[0]!r} is not a setting the objective takes "
                    "per trial.",
                    path=("dac", where, i, unknown[0]),
                )
    config = dataclasses.replace(
        spec.study_config(),
        space=dac_space(section.episodes, len(instances), len(held_out)),
        describe=_EpisodeName(instances + held_out),
        baselines=(),
    )
    start = None
    if section.start_from is not None:
        start = load_policy(section.start_from).snapshot()
    plan = DACPlan(
        study=config,
        objective=spec.objective_ref(),
        param=param,
        instances=instances,
        held_out=held_out,
        episodes=section.episodes,
        batch=section.batch,
        algorithm=section.algorithm,
        trainer=section.trainer,
        policy=section.policy,
        seed=section.seed,
        runner=spec.runner,
        budget=spec.search_budget(),
        policy_path=section.policy_path or spec.resolved_run_dir / "policy.json",
        start_from=start,
        evaluate_static=section.static,
    )
    _check_options(section.trainer, _TRAINER_OPTIONS, "trainer")
    _check_options(section.policy, _POLICY_OPTIONS, "policy")
    try:
        plan.new_trainer(plan.new_policy())  # bad values fail before the study exists
    except ConfigError as err:
        raise err.prefixed("dac") from None
    return run_dac(plan, resume=resume, progress=progress, on_start=on_start)


_TRAINER_OPTIONS = ("lr", "entropy", "baseline_decay", "epochs", "clip")
_POLICY_OPTIONS = ("features", "hidden", "levels", "hold_bias")


def _check_options(options: Mapping[str, Any], allowed: Sequence[str], section: str) -> None:
    for key in options:
        if key not in allowed:
            raise ConfigError(
                f"unknown {section} option {key!r}; allowed: {', '.join(allowed)}.",
                path=("dac", section, key),
            )


class _EpisodeName:
    """``ep012 seed=3``: an episode's MLflow run name."""

    def __init__(self, instances: Sequence[Mapping[str, Any]]) -> None:
        self.instances = list(instances)

    def __call__(self, params: Mapping[str, Any]) -> str:
        from paretune.spaces import compact_params

        index = int(params.get("instance", 0))
        inst = self.instances[index] if 0 <= index < len(self.instances) else {}
        return f"ep{int(params.get('episode', 0)):03d} {compact_params(inst)}".strip()

    def __repr__(self) -> str:
        return f"_EpisodeName({len(self.instances)} instances)"
