"""Controllers: who proposes the next candidate. Every controller is an Optuna sampler."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna

from paretune._errors import ConfigError
from paretune.search._botorch import BoTorchSampler
from paretune.trials_store._store import MetricConstraints

if TYPE_CHECKING:
    from paretune.spec import SearchSpec

__all__ = ["controller_names", "make_pruner", "make_sampler"]


def _random(spec: SearchSpec, seed: int | None, **options: Any) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed, **options)


def _tpe(spec: SearchSpec, seed: int | None, **options: Any) -> optuna.samplers.BaseSampler:
    conditional = any(p.condition is not None for p in spec.search_space)
    kwargs: dict[str, Any] = {
        "multivariate": True,
        # Conditional spaces: TPE models each group of co-occurring parameters jointly instead
        # of falling back to independent sampling.
        "group": conditional,
        # Running trials count as bad results, so parallel workers spread out.
        "constant_liar": True,
    }
    kwargs.update(options)
    return optuna.samplers.TPESampler(seed=seed, constraints_func=_constraints(spec), **kwargs)


def _nsga2(spec: SearchSpec, seed: int | None, **options: Any) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=_constraints(spec), **options)


def _gp(spec: SearchSpec, seed: int | None, **options: Any) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed, constraints_func=_constraints(spec), **options)


def _botorch(spec: SearchSpec, seed: int | None, **options: Any) -> optuna.samplers.BaseSampler:
    ref = spec.reference_point
    kwargs: dict[str, Any] = {
        "search_space": spec.search_space,
        "constraints_func": _constraints(spec),
        "reference_point": None if ref is None else [ref[m.name] for m in spec.metrics],
    }
    # Metrics the objective computes before training (finetune's trainable percentage) are
    # given to the acquisition exactly instead of being modelled; `known_objectives: {}` in
    # the options turns that off.
    known = spec.known_metrics
    positions = {i: known[m.name] for i, m in enumerate(spec.metrics) if m.name in known}
    if positions and len(positions) < len(spec.metrics):
        kwargs["known_objectives"] = positions
    kwargs.update(options)
    return BoTorchSampler(seed=seed, **kwargs)


def _constraints(spec: SearchSpec) -> MetricConstraints | None:
    return MetricConstraints(spec) if spec.objective.constraints else None


_FACTORIES: dict[str, tuple[Callable[..., optuna.samplers.BaseSampler], type]] = {
    "random": (_random, optuna.samplers.RandomSampler),
    "tpe": (_tpe, optuna.samplers.TPESampler),
    "nsga2": (_nsga2, optuna.samplers.NSGAIISampler),
    "gp": (_gp, optuna.samplers.GPSampler),
    "botorch": (_botorch, BoTorchSampler),
}


# Samplers whose randomness is keyed by (seed, trial number) and which avoid existing params
# themselves: the same seed on resume continues their sequence instead of replaying it.
_KEYED_BY_TRIAL = {"botorch"}


def controller_names() -> list[str]:
    return list(_FACTORIES)


def make_sampler(spec: SearchSpec, *, n_existing_trials: int = 0) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for the spec's controller.

    The seed of Optuna's samplers is offset by the number of trials already in the study, so a
    resumed search does not replay the random draws of its first session (a seeded random
    sampler would otherwise propose the already-evaluated parameters again) while staying
    reproducible from storage. ``botorch`` keeps the seed: its draws depend on the trial number.

    Raises:
        ConfigError: An option the sampler does not take, or a value it rejects.
    """
    c = spec.controller
    factory, cls = _FACTORIES[c.name]
    accepted = set(inspect.signature(cls).parameters) - {"seed", "search_space"}
    for key in c.options:
        if key not in accepted or key == "constraints_func":
            raise ConfigError(
                f"unknown option {key!r} for controller {c.name!r}; allowed: "
                f"{', '.join(sorted(accepted - {'constraints_func'}))}",
                path=("controller", "options", key),
            )
    seed = c.seed
    if seed is not None and c.name not in _KEYED_BY_TRIAL:
        seed += n_existing_trials
    try:
        return factory(spec, seed, **c.options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{err}", path=("controller", "options")) from None


_PRUNERS: dict[str, type] = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
}


def make_pruner(name: str, options: dict[str, Any]) -> optuna.pruners.BasePruner:
    """The Optuna pruner for the spec's ``pruner`` section.

    Raises:
        ConfigError: An option the pruner does not take, or a value it rejects.
    """
    cls = _PRUNERS[name]
    accepted = set(inspect.signature(cls).parameters)
    for key in options:
        if key not in accepted:
            raise ConfigError(
                f"unknown option {key!r} for pruner {name!r}; allowed: "
                f"{', '.join(sorted(accepted)) or 'none'}",
                path=("pruner", "options", key),
            )
    try:
        return cls(**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{err}", path=("pruner", "options")) from None
