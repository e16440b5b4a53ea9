"""Controllers by name: each proposes valid candidates, is seeded, and survives a resume."""

from __future__ import annotations

import optuna
import pytest

from paretune import ConfigError
from paretune.search import controller_names, run_search
from paretune.spec import load_spec


def _spec(tmp_path, controller: str, trials: int, **options) -> dict:
    return {
        "study": f"ctl-{controller}",
        "run_dir": str(tmp_path / controller),
        "objective": {"type": "peft_like"},  # mixed: bools, ints, categorical, a condition
        "controller": {"name": controller, "seed": 7, "options": options},
        "budget": {"trials": trials},
    }


def test_optuna_and_botorch_controllers_are_registered():
    # the built-in ones first, in this order (tests may register more)
    assert controller_names()[:5] == ["random", "tpe", "nsga2", "gp", "botorch"]


def test_botorch_controller_gets_the_spec_space_reference_point_and_options(tmp_path):
    from paretune.search import BoTorchSampler

    raw = _spec(tmp_path, "botorch", 4)
    raw["controller"]["options"] = {"fast": True, "n_startup_trials": 3}
    spec = load_spec(raw)
    sampler = spec.make_sampler()
    assert isinstance(sampler, BoTorchSampler)
    assert sampler._space == spec.search_space
    assert spec.reference_point is not None
    reference = tuple(spec.reference_point[m.name] for m in spec.metrics)
    assert sampler._settings.reference == reference
    assert sampler._n_startup == 3 and sampler._settings.options.num_restarts == 2


def test_botorch_controller_rejects_unknown_and_bad_options(tmp_path):
    raw = _spec(tmp_path, "botorch", 4)
    raw["controller"]["options"] = {"restarts": 3}
    with pytest.raises(ConfigError) as info:
        load_spec(raw).make_sampler()
    assert info.value.path == ("controller", "options", "restarts")
    assert "num_restarts" in str(info.value)
    raw["controller"]["options"] = {"num_restarts": 0}
    with pytest.raises(ConfigError, match="num_restarts"):
        load_spec(raw).make_sampler()


@pytest.mark.parametrize("name", ["random", "tpe", "nsga2", "gp"])
def test_same_seed_same_first_candidates(tmp_path, name):
    spec = load_spec(_spec(tmp_path, name, 4))
    draws = []
    for _ in range(2):
        study = optuna.create_study(directions=spec.directions, sampler=spec.make_sampler())
        draws.append([spec.search_space.suggest(study.ask()) for _ in range(3)])
    assert draws[0] == draws[1]


def test_resumed_sampler_is_reseeded_by_the_study_size(tmp_path):
    spec = load_spec(_spec(tmp_path, "random", 4))
    fresh = optuna.create_study(directions=spec.directions, sampler=spec.make_sampler())
    resumed = optuna.create_study(
        directions=spec.directions, sampler=spec.make_sampler(n_existing_trials=5)
    )
    assert spec.search_space.suggest(fresh.ask()) != spec.search_space.suggest(resumed.ask())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["random", "tpe", "nsga2", "gp"])
def test_each_controller_runs_a_mixed_space_search(tmp_path, name):
    options = {"population_size": 4} if name == "nsga2" else {}
    if name in ("tpe", "gp"):
        options["n_startup_trials"] = 4
    spec = load_spec(_spec(tmp_path, name, 10, **options))
    result = run_search(spec.plan())
    assert result.counts["COMPLETE"] == 10
    for t in result.store.study.trials:
        spec.search_space.validate(t.params)
    assert result.pareto


def test_botorch_keeps_its_seed_on_resume_and_optuna_samplers_offset_it(tmp_path):
    spec = load_spec(_spec(tmp_path, "botorch", 4))
    assert spec.make_sampler(n_existing_trials=5)._seed == spec.make_sampler()._seed
    tpe = load_spec(_spec(tmp_path, "random", 4))
    a = tpe.make_sampler(n_existing_trials=5)
    b = tpe.make_sampler()
    assert a._rng.rng.random() != b._rng.rng.random()


def test_botorch_capabilities_are_declared_by_the_sampler_class():
    from paretune.search import BoTorchSampler, Capabilities, controller_capabilities

    declared = BoTorchSampler.capabilities
    assert isinstance(declared, Capabilities)
    assert controller_capabilities("botorch") is declared
    assert declared == Capabilities(
        constraints=True, pending=True, no_duplicates=True, keyed_by_trial=True
    )


@pytest.fixture
def restore_controllers():
    from paretune.search import _controllers

    saved = dict(_controllers._REGISTRY)
    yield
    _controllers._REGISTRY.clear()
    _controllers._REGISTRY.update(saved)


@pytest.mark.usefixtures("restore_controllers")
def test_a_sampler_class_registered_as_its_own_factory_declares_its_capabilities():
    from paretune.search import Capabilities, controller_capabilities, register_controller

    class Declares(optuna.samplers.RandomSampler):
        capabilities = Capabilities(pending=True)

    class Inherits(Declares):
        pass

    register_controller("test-declares", Declares)
    register_controller("test-inherits", Inherits)
    register_controller("test-plain", optuna.samplers.RandomSampler)
    assert controller_capabilities("test-declares") is Declares.capabilities
    assert controller_capabilities("test-inherits") is Declares.capabilities
    assert controller_capabilities("test-plain") == Capabilities()


@pytest.mark.usefixtures("restore_controllers")
@pytest.mark.parametrize("declared", [{}, False, "pending", property(lambda self: None)])
def test_a_sampler_class_capabilities_that_are_not_capabilities_are_rejected(declared):
    from paretune.search import register_controller

    Declares = type("Declares", (optuna.samplers.RandomSampler,), {"capabilities": declared})
    with pytest.raises(ConfigError, match=r"Declares\.capabilities .*must be a Capabilities"):
        register_controller("test-declares", Declares)


@pytest.mark.usefixtures("restore_controllers")
def test_a_factory_function_attribute_is_not_read_as_capabilities():
    from paretune.search import Capabilities, controller_capabilities, register_controller

    def factory(context, **options):
        return optuna.samplers.RandomSampler(seed=context.seed)

    factory.capabilities = Capabilities(pending=True)  # only the argument or a sampler class
    register_controller("test-function", factory)
    assert controller_capabilities("test-function") == Capabilities()
