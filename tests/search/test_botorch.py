"""BoTorchSampler on its own: a plain Optuna sampler, its arguments, constraints, the
reference point, duplicates, pickling, failed and pruned trials, and a whole paretune search.

Every sampler runs in its documented fast mode (``fast=True``) with a short start-up.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import threading
import time
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from paretune._errors import ConfigError
from paretune.search import BoTorchSampler, run_search
from paretune.spaces import Categorical, Float, Int, SearchSpace
from paretune.spec import load_spec
from tests.conftest import counting_spec

_BOTORCH_LOGGER = "paretune.search._botorch"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sampler(**kwargs: Any) -> BoTorchSampler:
    kwargs.setdefault("seed", 0)
    kwargs.setdefault("n_startup_trials", 3)
    return BoTorchSampler(fast=True, **kwargs)


def fallbacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The proposals that failed and were replaced by random ones (a warning each)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == _BOTORCH_LOGGER and r.levelno >= logging.WARNING
    ]


def distinct(trials: list[FrozenTrial]) -> int:
    return len({tuple(sorted(t.params.items())) for t in trials})


# -- a plain Optuna sampler ------------------------------------------------------------------


def test_single_objective_optimize_finds_the_minimum_of_a_quadratic(caplog):
    def objective(trial: optuna.Trial) -> float:
        return (trial.suggest_float("x", 0.0, 1.0) - 0.3) ** 2

    study = optuna.create_study(sampler=sampler())
    study.optimize(objective, n_trials=8)

    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 8
    assert all(0.0 <= t.params["x"] <= 1.0 for t in study.trials)
    # 3 start-up points, then 5 from expected improvement, which stay near the minimum at 0.3.
    assert abs(study.best_params["x"] - 0.3) < 0.03
    assert sum(abs(t.params["x"] - 0.3) < 0.1 for t in study.trials[3:]) >= 3
    assert fallbacks(caplog) == []


def test_multi_objective_optimize_builds_a_pareto_front(caplog):
    def objective(trial: optuna.Trial) -> tuple[float, float]:
        x = trial.suggest_float("x", 0.0, 1.0)
        n = trial.suggest_int("n", 1, 4)
        return x * n, (1.0 - x) ** 2 + 1.0 / n

    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler())
    study.optimize(objective, n_trials=8)

    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 8
    assert all(0.0 <= t.params["x"] <= 1.0 and 1 <= t.params["n"] <= 4 for t in study.trials)
    assert len(study.best_trials) >= 2  # the two objectives conflict
    assert distinct(study.trials) == 8
    assert fallbacks(caplog) == []


@pytest.fixture
def kernel_lock(tmp_path, monkeypatch):
    """The lock file of BoTorch's fused-kernel build in a fresh extensions directory, in a
    process that has not loaded the kernel yet."""
    logei = pytest.importorskip("botorch.acquisition.multi_objective.logei")
    if not hasattr(logei, "_load_attempted"):
        pytest.skip("this BoTorch compiles no fused kernel")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(logei, "_load_attempted", False)
    loads: list[int] = []  # the compile itself (a minute) is not what these tests are about
    monkeypatch.setattr(logei, "_try_load_fused_kernel", lambda: loads.append(1))
    lock = tmp_path / "logei_fused_ext" / "lock"
    lock.parent.mkdir()
    lock.touch()
    return lock, loads


def test_the_lock_of_a_killed_kernel_compile_is_removed_not_waited_on(kernel_lock, caplog):
    from paretune.search._botorch import kernel

    kernel_lock, loads = kernel_lock

    old = time.time() - kernel.STALE_KERNEL_LOCK_S - 60
    os.utime(kernel_lock, (old, old))
    with caplog.at_level(logging.WARNING, logger="paretune"):
        kernel.load_fused_kernel()
    assert not kernel_lock.exists()
    assert "did not finish" in caplog.text and str(kernel_lock) in caplog.text
    assert loads == [1]  # then BoTorch builds it


def test_a_live_kernel_compile_is_waited_for(kernel_lock, caplog):
    from paretune.search._botorch.kernel import load_fused_kernel

    kernel_lock, loads = kernel_lock

    remover = threading.Timer(1.0, kernel_lock.unlink)  # the other process finishes
    remover.start()
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="paretune"):
        load_fused_kernel()
    remover.join()
    assert time.monotonic() - t0 >= 0.9
    assert "waiting for another process" in caplog.text and "did not finish" not in caplog.text
    assert loads == [1]


def test_directions_are_honoured_when_maximize_and_minimize_are_mixed(caplog):
    def objective(trial: optuna.Trial) -> tuple[float, float]:
        x = trial.suggest_float("x", 0.0, 1.0)
        return -((x - 0.3) ** 2), (x - 0.3) ** 2

    # Maximising the first and minimising the second agree on x = 0.3. A sampler that read
    # either direction the wrong way round would see a conflict and spread out to x = 0 and 1.
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler())
    study.optimize(objective, n_trials=8)
    model_based = [t.params["x"] for t in study.trials[3:]]
    assert sum(abs(x - 0.3) < 0.05 for x in model_based) >= 3, model_based
    assert fallbacks(caplog) == []


def test_define_by_run_conditional_parameter_is_modelled_from_the_union_space(caplog):
    def objective(trial: optuna.Trial) -> float:
        if trial.suggest_categorical("kind", ["a", "b"]) == "a":
            return (trial.suggest_float("x", 0.0, 1.0) - 0.4) ** 2
        return 0.1 * abs(trial.suggest_int("n", 0, 5) - 2) + 0.05

    s = sampler(n_startup_trials=5)  # enough Sobol points to visit both branches
    study = optuna.create_study(sampler=s)
    study.optimize(objective, n_trials=8)

    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        expected = {"kind", "x"} if t.params["kind"] == "a" else {"kind", "n"}
        assert set(t.params) == expected and set(t.distributions) == expected
    branches = {t.params["kind"] for t in study.trials}
    assert branches == {"a", "b"}
    # No search_space given: the sampler models the union of the completed trials' params.
    space = s.infer_relative_search_space(study, study.trials[-1])
    assert space == {
        "kind": CategoricalDistribution(["a", "b"]),
        "n": IntDistribution(0, 5),
        "x": optuna.distributions.FloatDistribution(0.0, 1.0),
    }
    assert fallbacks(caplog) == []


# -- constructor -----------------------------------------------------------------------------


def test_constructor_is_keyword_only():
    with pytest.raises(TypeError, match="positional"):
        BoTorchSampler(None)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"seed": "1"}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": True}, "seed"),
        ({"n_startup_trials": 0}, "n_startup_trials"),
        ({"num_restarts": "x"}, "num_restarts"),
        ({"raw_samples": 0}, "raw_samples"),
        ({"mc_samples": True}, "mc_samples"),
        ({"maxiter": 2.5}, "maxiter"),
        ({"search_space": [Int("n", low=0, high=1)]}, "search_space"),
        ({"search_space": "x"}, "search_space"),
        ({"reference_point": [1.0, math.nan]}, "reference_point"),
        ({"reference_point": [math.inf, 1.0]}, "reference_point"),
        ({"constraints_func": 3}, "constraints_func"),
        ({"reference_point": "12"}, "reference_point"),
        ({"reference_point": 1.0}, "reference_point"),
        ({"reference_point": ["a", 1.0]}, "reference_point"),
        ({"reference_point": [True, 1.0]}, "reference_point"),
        ({"fast": "no"}, "fast"),
        ({"torch_threads": 0}, "torch_threads"),
        ({"torch_threads": True}, "torch_threads"),
        ({"known_objectives": [len]}, "known_objectives"),
        ({"known_objectives": {1: 3}}, "known_objectives"),
        ({"known_objectives": {-1: len}}, "known_objectives"),
        ({"local_share": 1.5}, "local_share"),
        ({"local_share": -0.1}, "local_share"),
        ({"local_share": "half"}, "local_share"),
        ({"local_share": True}, "local_share"),
        ({"local_radius": 0}, "local_radius"),
        ({"local_radius": 2.0}, "local_radius"),
        ({"max_fit_points": 1}, "max_fit_points"),
        ({"max_fit_points": 10.0}, "max_fit_points"),
        ({"max_baseline_points": 0}, "max_baseline_points"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else None,
)
def test_bad_arguments_raise_a_config_error_naming_the_argument(kwargs, named):
    with pytest.raises(ConfigError, match=f"`{named}`") as info:
        BoTorchSampler(**kwargs)
    assert isinstance(info.value, ValueError)
    assert repr(next(iter(kwargs.values())))[:20] in str(info.value)


def test_a_mapping_that_is_not_of_distributions_is_a_config_error():
    with pytest.raises(ConfigError, match="Optuna distribution"):
        BoTorchSampler(search_space={"x": 1})  # type: ignore[dict-item]


# -- constraints -----------------------------------------------------------------------------


def feasible_left_half(trial: FrozenTrial) -> list[float]:
    """Optuna's contract: feasible iff every value is <= 0; here iff x <= 0.5."""
    return [trial.params["x"] - 0.5]


def two_basins(trial: optuna.Trial) -> float:
    """The deeper basin (x = 0.85) is infeasible; the feasible optimum is at x = 0.2."""
    x = trial.suggest_float("x", 0.0, 1.0)
    y = trial.suggest_float("y", 0.0, 1.0)
    return (
        (y - 0.5) ** 2
        - math.exp(-(((x - 0.85) / 0.15) ** 2))
        - 0.6 * math.exp(-(((x - 0.2) / 0.15) ** 2))
    )


@pytest.mark.slow
def test_constraints_steer_model_based_proposals_to_the_feasible_region(caplog):
    def feasible_model_proposals(constraints_func: Any) -> int:
        s = sampler(n_startup_trials=4, constraints_func=constraints_func)
        study = optuna.create_study(sampler=s)
        study.optimize(two_basins, n_trials=14)
        if constraints_func is not None:
            for t in study.trials:
                assert t.system_attrs["constraints"] == (t.params["x"] - 0.5,)
        return sum(t.params["x"] <= 0.5 for t in study.trials[4:])

    with_constraints = feasible_model_proposals(feasible_left_half)
    without = feasible_model_proposals(None)
    assert with_constraints >= 7, with_constraints  # of 10 model-based proposals
    # The unconstrained search prefers the deeper, infeasible basin.
    assert without < with_constraints
    assert fallbacks(caplog) == []


@pytest.mark.slow
def test_constraints_set_on_the_trial_are_used_like_a_constraints_func(caplog):
    # Optuna 5's Trial.set_constraint; the sampler has no constraints_func.
    def objective(trial: optuna.Trial) -> float:
        value = two_basins(trial)
        trial.set_constraint("x_max", trial.params["x"] - 0.5)
        return value

    study = optuna.create_study(sampler=sampler(n_startup_trials=4))
    study.optimize(objective, n_trials=14)
    assert sum(t.params["x"] <= 0.5 for t in study.trials[4:]) >= 7
    assert fallbacks(caplog) == []


def test_a_trial_with_an_infinite_constraint_is_left_out_of_the_model(caplog):
    def constraints(trial: FrozenTrial) -> list[float]:
        return [math.inf if trial.number == 1 else trial.params["x"] - 0.5]

    study = optuna.create_study(sampler=sampler(constraints_func=constraints))
    study.optimize(two_basins, n_trials=6)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6
    assert fallbacks(caplog) == []  # the model ran for trials 4 and 5


def test_constraint_values_are_written_for_complete_and_pruned_trials():
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        trial.suggest_float("y", 0.0, 1.0)
        if trial.number == 1:
            raise optuna.TrialPruned()
        return x

    study = optuna.create_study(sampler=sampler(constraints_func=feasible_left_half))
    study.optimize(objective, n_trials=5)
    for t in study.trials:
        # Written after COMPLETE and PRUNED trials alike, as Optuna's own samplers do.
        assert t.system_attrs["constraints"] == (t.params["x"] - 0.5,), t.state


# -- reference point -------------------------------------------------------------------------


def front(trial: optuna.Trial) -> tuple[float, float]:
    x = trial.suggest_float("x", 0.0, 1.0)
    return x, 1.0 - math.sqrt(x)


def test_a_reference_point_with_one_value_per_objective_is_used(caplog):
    study = optuna.create_study(
        directions=["minimize", "minimize"], sampler=sampler(reference_point=[1.1, 1.1])
    )
    study.optimize(front, n_trials=6)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6
    assert fallbacks(caplog) == []


def test_a_reference_point_of_the_wrong_length_stops_the_first_trial():
    # The constructor does not know the study's objectives; the first trial does.
    study = optuna.create_study(
        directions=["minimize", "minimize"], sampler=sampler(reference_point=[1.1])
    )
    with pytest.raises(ConfigError, match="`reference_point` has 1 values but the study has 2"):
        study.optimize(front, n_trials=5)


# -- known objectives ------------------------------------------------------------------------

# The cost of each of 32 sizes, scrambled so that no smooth model of `n` predicts it from a
# few points: only size 11 is free.
_SCRAMBLED = [(7 * n) % 32 for n in range(32)]
_SCRAMBLED = [(c + 32 - _SCRAMBLED[11]) % 32 for c in _SCRAMBLED]


def scrambled_cost(params: dict[str, Any]) -> float:
    return float(_SCRAMBLED[params["n"]])


def score_and_scrambled_cost(trial: optuna.Trial) -> tuple[float, float]:
    """The score does not depend on the size; the cost is known before the trial runs."""
    x = trial.suggest_float("x", 0.0, 1.0)
    n = trial.suggest_int("n", 0, 31)
    return 1.0 - (x - 0.6) ** 2, scrambled_cost({"n": n})


def test_a_known_objective_is_computed_at_the_candidates_not_learned(caplog):
    # After 4 Sobol points the model has seen 4 of the 32 costs. Knowing the cost, the
    # acquisition sees that size 11 (free) adds hypervolume for any x and goes there first,
    # then stays among the cheap sizes; a GP of the cost cannot tell where they are.
    space = SearchSpace([Float("x", low=0.0, high=1.0), Int("n", low=0, high=31)])

    def model_based_costs(known: dict[int, Any] | None) -> list[float]:
        s = sampler(search_space=space, n_startup_trials=4, reference_point=[0.0, 32.0],
                    known_objectives=known)  # fmt: skip
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=s)
        study.optimize(score_and_scrambled_cost, n_trials=9)
        assert all(t.state == TrialState.COMPLETE for t in study.trials)
        assert all(t.params["n"] != 11 for t in study.trials[:4])  # not found by chance
        return [t.values[1] for t in study.trials[4:]]

    known = model_based_costs({1: scrambled_cost})
    learned = model_based_costs(None)
    assert known[0] == 0.0, known
    assert sorted(known)[2] <= 2.0, known  # the median: among the 3 cheapest of 32 sizes
    assert sum(known) < sum(learned) / 2, (known, learned)
    assert fallbacks(caplog) == []


_SWITCHES = 8


def switches_and_width(trial: optuna.Trial) -> tuple[float, float]:
    """AutoPEFT in miniature: layer switches and a width; more of either scores more, costs
    more, and the middle layers score most."""
    on = [trial.suggest_categorical(f"layer_{i}", [False, True]) for i in range(_SWITCHES)]
    width = trial.suggest_float("width", 0.0, 1.0)
    gain = sum(1.0 - abs(i - 3.5) / 4 for i in range(_SWITCHES) if on[i])
    return gain * (0.5 + width) / (1.0 + 0.1 * gain), sum(on) * (1.0 + width)


def _changed(a: dict[str, Any], b: dict[str, Any]) -> int:
    return sum(a[k] != b[k] for k in a)


def switches_and_width_cost(params: dict[str, Any]) -> float:
    return sum(params[f"layer_{i}"] for i in range(_SWITCHES)) * (1.0 + params["width"])


@pytest.mark.parametrize(
    ("local_share", "known"),
    [(1.0, False), (1.0, True), (0.0, False)],
    ids=["local", "local-cost-known", "global"],
)
def test_local_proposals_change_at_most_radius_params_of_a_front_trial(local_share, known, caplog):
    # With local_share=1 every model proposal keeps all but local_radius (1) params of a
    # trial that was on the observed Pareto front (inside the reference point) when it was
    # made; global proposals (local_share=0) change two or more on this 9-parameter space.
    # The same with the cost known to the acquisition (as the AutoPEFT example runs it).
    s = sampler(n_startup_trials=5, reference_point=[0.0, 20.0], local_share=local_share,
                local_radius=1,
                known_objectives={1: switches_and_width_cost} if known else None)  # fmt: skip
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=s)
    study.optimize(switches_and_width, n_trials=14)
    trials = study.trials
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert distinct(trials) == len(trials)
    distances = []
    for n in range(5, len(trials)):
        seen = [t for t in trials[:n] if t.values[0] > 0.0 and t.values[1] < 20.0]
        front = [
            t for t in seen
            if not any(o.values[0] >= t.values[0] and o.values[1] <= t.values[1]
                       and o.values != t.values for o in seen)
        ]  # fmt: skip
        distances.append(min(_changed(trials[n].params, t.params) for t in front))
    if local_share:
        assert max(distances) == 1, distances
    else:
        assert max(distances) >= 2, distances
    assert fallbacks(caplog) == []


def test_candidates_the_space_refuses_add_nothing_through_a_known_objective(caplog):
    # The known cost is lowest where the rule refuses (n < 4, as a PEFT candidate without
    # modules counts only its head): there the acquisition must see no gain, not the best cost.
    import torch

    space = SearchSpace(
        [Float("x", low=0.0, high=1.0), Int("n", low=0, high=15)],
        rule=lambda params: params["n"] >= 4,
    )
    s = sampler(search_space=space, n_startup_trials=4, reference_point=[0.0, 16.0],
                known_objectives={1: lambda params: float(params["n"])})  # fmt: skip
    problem = s._problem(space.distributions())
    signs = torch.tensor([1.0, -1.0], dtype=torch.float64)
    ref = torch.tensor([0.0, -16.0], dtype=torch.float64)  # maximised: -cost
    objective = s._known.objective(problem, signs, ref)
    X = torch.tensor([[[0.5, 0.0]], [[0.5, 4 / 15]], [[0.2, 9 / 15]]], dtype=torch.float64)
    samples = torch.tensor([0.9, 0.8, 0.7], dtype=torch.float64).reshape(1, 3, 1, 1)
    out = objective(samples, X)  # 1 MC sample x 3 candidates x q=1 x 2 objectives
    assert out.shape == (1, 3, 1, 2)
    assert out[0, :, 0, 0].tolist() == [0.9, 0.8, 0.7]  # the model's, untouched
    assert out[0, 1, 0, 1] == -4.0 and out[0, 2, 0, 1] == -9.0  # the known costs, signed
    assert out[0, 0, 0, 1] < -1000  # n = 0 is refused: far below the reference point

    def search(trial: optuna.Trial) -> tuple[float, float]:
        params = space.suggest(trial)
        return 1.0 - (params["x"] - 0.6) ** 2, float(params["n"])

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=s)
    study.optimize(search, n_trials=8)
    assert all(t.params["n"] >= 4 for t in study.trials)
    assert fallbacks(caplog) == []


def test_a_known_objective_that_disagrees_with_the_trials_is_reported_once(caplog):
    space = SearchSpace([Float("x", low=0.0, high=1.0), Int("n", low=0, high=31)])
    s = sampler(search_space=space, n_startup_trials=3,
                known_objectives={1: lambda params: scrambled_cost(params) + 1.0})  # fmt: skip
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=s)
    with caplog.at_level(logging.WARNING, logger=_BOTORCH_LOGGER):
        study.optimize(score_and_scrambled_cost, n_trials=5)
    warned = [m for m in fallbacks(caplog) if "known objective 1 gives" in m]
    assert len(warned) == 1 and "which reported" in warned[0]
    assert fallbacks(caplog) == warned  # the proposals still ran


@pytest.mark.parametrize(
    ("known", "message"),
    [({2: scrambled_cost}, r"positions \[2\] but the study has 2"),
     ({0: scrambled_cost, 1: scrambled_cost}, "at least one objective to model")],
)  # fmt: skip
def test_known_objectives_must_fit_the_study(known, message):
    space = SearchSpace([Float("x", low=0.0, high=1.0), Int("n", low=0, high=31)])
    s = sampler(search_space=space, known_objectives=known)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=s)
    with pytest.raises(ConfigError, match=message):
        study.optimize(score_and_scrambled_cost, n_trials=1)


# -- duplicates ------------------------------------------------------------------------------


def bowl_on_a_grid(trial: optuna.Trial) -> float:
    """18 points; the model keeps wanting (2, "mid") once it has seen it."""
    n = trial.suggest_int("n", 0, 5)
    c = trial.suggest_categorical("c", ["lo", "mid", "hi"])
    return (n - 2) ** 2 + (c != "mid")


@pytest.mark.slow
@pytest.mark.parametrize(
    "search_space",
    [None, SearchSpace([Int("n", low=0, high=5), Categorical("c", choices=("lo", "mid", "hi"))])],
    ids=["define-by-run", "search_space"],
)
def test_no_duplicate_suggestions_until_the_space_is_exhausted(search_space, caplog):
    study = optuna.create_study(sampler=sampler(search_space=search_space))
    study.optimize(bowl_on_a_grid, n_trials=18)
    assert distinct(study.trials) == 18
    assert fallbacks(caplog) == []


# -- torch threads ---------------------------------------------------------------------------


class _ThreadsSeen(BoTorchSampler):
    """Records torch's thread count inside each model-based proposal."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: list[int] = []

    def _propose(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        import torch

        self.seen.append(torch.get_num_threads())
        return super()._propose(*args, **kwargs)


@pytest.mark.parametrize(("torch_threads", "inside"), [(1, 1), (None, 2)])
def test_proposals_run_on_torch_threads_and_restore_the_callers(torch_threads, inside):
    import torch

    threads_in_objective = []

    def objective(trial: optuna.Trial) -> float:
        threads_in_objective.append(torch.get_num_threads())
        return (trial.suggest_float("x", 0.0, 1.0) - 0.3) ** 2

    torch.set_num_threads(2)  # the one_torch_thread fixture restores it
    s = _ThreadsSeen(seed=0, n_startup_trials=3, fast=True, torch_threads=torch_threads)
    optuna.create_study(sampler=s).optimize(objective, n_trials=5)
    assert s.seen == [inside, inside]  # trials 3 and 4 are model-based
    assert threads_in_objective == [2] * 5
    assert torch.get_num_threads() == 2


# -- pickling --------------------------------------------------------------------------------


@pytest.mark.slow
def test_picklable_before_and_after_use_and_the_copy_proposes_the_same():
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        c = trial.suggest_categorical("c", ["a", "b", "c"])
        return (x - 0.3) ** 2 + (c == "b")

    s = sampler(constraints_func=feasible_left_half)
    pickle.loads(pickle.dumps(s))
    study = optuna.create_study(sampler=s)
    study.optimize(objective, n_trials=5)  # past the start-up: a fitted model is cached

    copy = pickle.loads(pickle.dumps(s))
    assert isinstance(copy, BoTorchSampler)
    trial = study._storage.get_trial(study.ask()._trial_id)
    space = s.infer_relative_search_space(study, trial)
    assert set(space) == {"x", "c"}
    original = s.sample_relative(study, trial, space)
    assert copy.sample_relative(study, trial, space) == original

    study.sampler = copy  # and the copy carries on as a sampler
    study.optimize(objective, n_trials=2)
    assert len(study.trials) == 8


# -- failed and pruned trials ----------------------------------------------------------------


def test_failed_and_pruned_trials_do_not_stop_the_search(caplog):
    def objective(trial: optuna.Trial) -> float:
        n = trial.suggest_int("n", 0, 4)
        c = trial.suggest_categorical("c", ["lo", "mid", "hi"])
        if trial.number % 4 == 1:
            raise RuntimeError("the objective crashed")
        if trial.number % 4 == 2:
            trial.report(100.0, step=0)
            raise optuna.TrialPruned()
        return (n - 2) ** 2 + (c != "mid")

    space = {"n": IntDistribution(0, 4), "c": CategoricalDistribution(["lo", "mid", "hi"])}
    study = optuna.create_study(sampler=sampler(search_space=space))
    study.optimize(objective, n_trials=12, catch=(RuntimeError,))

    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAIL) == 3 and states.count(TrialState.PRUNED) == 3
    assert states.count(TrialState.COMPLETE) == 6  # 3 of them from the model
    for t in study.trials:
        assert 0 <= t.params["n"] <= 4 and t.params["c"] in ("lo", "mid", "hi")
    # Failed and pruned params are not proposed again either (15 points, 12 trials).
    assert distinct(study.trials) == 12
    assert fallbacks(caplog) == []


# -- a whole paretune search -----------------------------------------------------------------


@pytest.mark.slow
def test_run_search_with_the_botorch_controller_spends_its_budget(
    tmp_path, counting_objective, caplog
):
    data = counting_spec(tmp_path, counting_objective, trials=7, controller="botorch")
    data["controller"]["options"] = {"fast": True, "n_startup_trials": 3}
    # (x - 0.3)^2 + (x - 0.7)^2 + 1 <= 1.2: feasible for x in about [0.18, 0.82].
    data["objective"]["constraints"] = [{"metric": "extra", "max": 1.2}]
    data["objective"]["reference_point"] = {"f0": 2.5, "f1": 2.5}
    spec = load_spec(data)

    result = run_search(spec.plan())

    study = result.store.study
    assert isinstance(study.sampler, BoTorchSampler)
    assert result.counts["COMPLETE"] == 7 and len(study.trials) == 7
    assert distinct(study.trials) == 7
    for t in study.trials:
        spec.search_space.validate(t.params)
        extra = t.user_attrs["paretune.metrics"]["extra"]
        (violation,) = t.system_attrs["constraints"]
        assert violation == pytest.approx(extra - 1.2)
    assert result.pareto
    assert all(t.system_attrs["constraints"][0] <= 0 for t in result.pareto)
    assert fallbacks(caplog) == []


# -- Ray Tune --------------------------------------------------------------------------------


def _tune_trainable(config: dict[str, Any]) -> dict[str, float]:
    x = config["x"]
    return {"f0": x**2, "f1": (x - 1.0) ** 2}


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # with tests/search/test_ray.py: one Ray cluster at a time
def test_usable_as_the_sampler_of_ray_tunes_optuna_search(caplog):
    ray = pytest.importorskip("ray")
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    search = OptunaSearch(
        space={"x": optuna.distributions.FloatDistribution(-1.0, 2.0)},
        metric=["f0", "f1"],
        mode=["min", "min"],
        sampler=sampler(),
    )
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        tuner = tune.Tuner(
            _tune_trainable,
            tune_config=tune.TuneConfig(search_alg=search, num_samples=6, max_concurrent_trials=2),
        )
        results = tuner.fit()
    finally:
        ray.shutdown()
    assert results.num_errors == 0
    xs = [r.config["x"] for r in results]
    assert len(xs) == 6 and len(set(xs)) == 6
    assert all(-1.0 <= x <= 2.0 for x in xs)
    study = search._ot_study
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 6
    # Trials 4-6 came from the model (3 start-up trials), none from the random fallback.
    assert fallbacks(caplog) == []


# -- robustness ------------------------------------------------------------------------------


def test_a_trial_that_failed_part_way_does_not_block_its_partial_params(caplog):
    # Trial 0 crashes after suggesting c only; proposals with c="a" are still new points.
    def objective(trial: optuna.Trial) -> float:
        c = trial.suggest_categorical("c", ["a", "b"])
        if trial.number == 0:
            raise RuntimeError("crashed before suggesting x")
        return (trial.suggest_float("x", 0.0, 1.0) - 0.5) ** 2 + (c == "b")

    study = optuna.create_study(sampler=sampler())
    study.optimize(objective, n_trials=8, catch=(RuntimeError,))
    assert study.trials[0].params == {"c": study.trials[0].params["c"]}
    later = [t.params["c"] for t in study.trials[4:]]
    assert later.count("a") >= 3, later  # the model prefers c="a"
    assert fallbacks(caplog) == []


def test_a_space_with_a_huge_integer_range_stays_cheap():
    # 2**31 grid levels must not be listed (it would take minutes and gigabytes).
    space = SearchSpace(
        [Int("seed", low=0, high=2**31 - 1), Categorical("c", choices=("a", "b", "c"))]
    )
    study = optuna.create_study(sampler=sampler(search_space=space))
    for _ in range(6):
        trial = study.ask()
        params = space.suggest(trial)
        study.tell(trial, params["seed"] / 2**31 + (params["c"] != "b"))
    assert all(space.validate(t.params) for t in study.trials)
    assert distinct(study.trials) == 6


def test_start_up_points_stay_distinct_on_a_tiny_space():
    # Four points, six start-up trials: Sobol repeats are replaced by new random points.
    space = SearchSpace([Int("n", low=0, high=3)])
    study = optuna.create_study(sampler=sampler(search_space=space, n_startup_trials=6))
    for _ in range(4):
        trial = study.ask()
        study.tell(trial, float(space.suggest(trial)["n"]))
    assert sorted(t.params["n"] for t in study.trials) == [0, 1, 2, 3]


def test_an_ordered_categorical_is_modelled_as_an_ordinal_dimension(caplog):
    sizes = (0, 1, 2, 3, 6, 12, 24, 48, 96, 192, 384)
    space = SearchSpace(
        [Categorical("size", choices=sizes, ordered=True), Categorical("act", choices=list("abc"))]
    )
    s = sampler(search_space=space, n_startup_trials=4)
    problem = s._problem(space.distributions())
    assert list(problem.discrete.values()) == [[k / 10 for k in range(11)]]
    assert list(problem.categorical.values()) == [[0.0, 0.5, 1.0]]

    def objective(trial: optuna.Trial) -> float:
        params = space.suggest(trial)
        return (sizes.index(params["size"]) - 6) ** 2 + (params["act"] != "b")

    study = optuna.create_study(sampler=s)
    study.optimize(objective, n_trials=12)
    assert study.best_value == 0  # size 24, act "b": found among 33 combinations in 12 trials
    assert fallbacks(caplog) == []


def _x_and_y_not_both_small(params):
    return params["x"] + params["y"] >= 0.5


def test_candidates_the_space_refuses_are_never_proposed(caplog):
    # The objective is best at the origin, which the space's rule refuses: a sampler that
    # ignored the rule would go there (and a runner would record failed trials).
    space = SearchSpace(
        [Float("x", low=0.0, high=1.0), Float("y", low=0.0, high=1.0)],
        rule=_x_and_y_not_both_small,
    )
    study = optuna.create_study(sampler=sampler(search_space=space, n_startup_trials=4))

    def objective(trial: optuna.Trial) -> float:
        params = space.suggest(trial)
        return params["x"] ** 2 + params["y"] ** 2

    study.optimize(objective, n_trials=12)
    assert all(space.admits(t.params) for t in study.trials)
    assert study.best_value < 0.15  # near the rule's edge (0.25, 0.25): 0.125
    assert fallbacks(caplog) == []


def test_reseeding_keeps_the_seeded_sequence():
    # Optuna reseeds the sampler for each trial when n_jobs > 1.
    def first_params(reseed: bool) -> list[dict[str, Any]]:
        s = sampler(n_startup_trials=10)
        study = optuna.create_study(sampler=s)
        out = []
        for _ in range(3):
            if reseed:
                s.reseed_rng()
            trial = study.ask()
            out.append({"x": trial.suggest_float("x", 0.0, 1.0)})
            study.tell(trial, out[-1]["x"])
        return out

    assert first_params(True) == first_params(False)


@pytest.mark.slow
def test_shared_by_optuna_threads(caplog):
    study = optuna.create_study(sampler=sampler())
    study.optimize(two_basins, n_trials=10, n_jobs=2)
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 10
    assert distinct(study.trials) == 10
    assert fallbacks(caplog) == []


# -- a bounded model past max_fit_points -----------------------------------------------------


def test_past_max_fit_points_the_model_sees_the_cap_the_front_and_the_latest(monkeypatch, caplog):
    from paretune.search._botorch import proposal

    fitted: list[Any] = []
    baselines: list[Any] = []
    real_fit, real_acq = proposal.fit_gp, proposal.build_acquisition

    def spy_fit(problem, X, Y, **kwargs):
        fitted.append(X.clone())
        return real_fit(problem, X, Y, **kwargs)

    def spy_acq(model, problem, X_baseline, *args, **kwargs):
        baselines.append(X_baseline.clone())
        return real_acq(model, problem, X_baseline, *args, **kwargs)

    monkeypatch.setattr(proposal, "fit_gp", spy_fit)
    monkeypatch.setattr(proposal, "build_acquisition", spy_acq)
    space = SearchSpace([Float("x", low=0.0, high=1.0), Float("y", low=0.0, high=1.0)])
    study = optuna.create_study(
        directions=["minimize", "minimize"],
        sampler=sampler(search_space=space, max_fit_points=12, max_baseline_points=5),
    )
    study.enqueue_trial({"x": 0.5, "y": 0.5})  # on the front of f below, all along
    for _ in range(20):
        trial = study.ask()
        p = space.suggest(trial)
        study.tell(trial, [p["x"], 1.0 - p["x"] + 10.0 * (p["y"] - 0.5) ** 2])
    assert not fallbacks(caplog)
    assert [len(X) for X in fitted][-1] == 12
    assert all(len(X) <= 12 for X in fitted)
    assert all(len(B) <= 5 for B in baselines)
    # The last fit: every point of the observed front, and the latest trial, are in it.
    complete = study.trials[:-1]
    values = [t.values for t in complete]
    front = [
        t
        for t, v in zip(complete, values, strict=True)
        if not any(w[0] <= v[0] and w[1] <= v[1] and w != v for w in values)
    ]
    rows = {(round(float(a), 9), round(float(b), 9)) for a, b in fitted[-1].tolist()}
    for t in [*front, complete[-1]]:
        assert (round(t.params["x"], 9), round(t.params["y"], 9)) in rows
    # The baseline is drawn from the front first.
    base = {(round(float(a), 9), round(float(b), 9)) for a, b in baselines[-1].tolist()}
    front_rows = {(round(t.params["x"], 9), round(t.params["y"], 9)) for t in front}
    assert base <= rows
    assert len(base & front_rows) == min(5, len(front_rows))


def test_no_cap_fits_every_trial(monkeypatch):
    from paretune.search._botorch import proposal

    sizes: list[int] = []
    real_fit = proposal.fit_gp

    def spy_fit(problem, X, Y, **kwargs):
        sizes.append(len(X))
        return real_fit(problem, X, Y, **kwargs)

    monkeypatch.setattr(proposal, "fit_gp", spy_fit)
    space = SearchSpace([Float("x", low=0.0, high=1.0)])
    study = optuna.create_study(
        sampler=sampler(search_space=space, max_fit_points=None, max_baseline_points=None)
    )
    for _ in range(8):
        trial = study.ask()
        study.tell(trial, (space.suggest(trial)["x"] - 0.3) ** 2)
    assert sizes == list(range(3, 8))


def test_mixed_space_proposals_sit_on_the_integer_levels_and_the_choices(caplog):
    space = SearchSpace(
        [
            Float("x", low=0.0, high=1.0),
            Int("k", low=0, high=16, step=2),
            Int("n", low=1, high=9),
            Categorical("mode", choices=("a", "b", "c")),
        ]
    )
    study = optuna.create_study(
        directions=["minimize", "minimize"], sampler=sampler(search_space=space)
    )
    for _ in range(10):
        trial = study.ask()
        p = space.suggest(trial)
        shift = {"a": 0.0, "b": 0.3, "c": 0.6}[p["mode"]]
        study.tell(trial, [p["x"] + shift, (1 - p["x"]) + abs(p["k"] - 8) / 8 + p["n"] / 9])
    assert not fallbacks(caplog)
    for t in study.trials:
        assert isinstance(t.params["k"], int) and t.params["k"] % 2 == 0
        assert 0 <= t.params["k"] <= 16
        assert isinstance(t.params["n"], int) and 1 <= t.params["n"] <= 9
        assert t.params["mode"] in ("a", "b", "c")
    assert distinct(study.trials) == 10
