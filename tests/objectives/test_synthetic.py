from __future__ import annotations

import itertools
import math
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from botorch.test_functions import multi_objective as botorch_mo

from paretune._errors import ConfigError
from paretune.objectives import (
    DTLZ2,
    ZDT1,
    BraninCurrin,
    PeftLike,
    SyntheticProblem,
    TrialContext,
    VehicleSafety,
)
from paretune.objectives._pareto import pareto_mask
from paretune.objectives._synthetic import _best_masks, _coverage, _layer_weights

CTX = TrialContext(trial_number=0)

# (our problem, the BoTorch problem it wraps, BoTorch's reference point and maximum hypervolume)
BOTORCH_CASES = [
    pytest.param(BraninCurrin, {}, botorch_mo.BraninCurrin, [18.0, 6.0], 59.36011874867746,
                 id="branin_currin"),
    pytest.param(DTLZ2, {"dim": 6, "num_objectives": 2}, botorch_mo.DTLZ2, [1.1, 1.1],
                 1.1**2 - math.pi / 4, id="dtlz2"),
    pytest.param(VehicleSafety, {}, botorch_mo.VehicleSafety,
                 [1864.72022, 11.81993945, 0.2903999384], 246.81607081187002,
                 id="vehicle_safety"),
    pytest.param(ZDT1, {"dim": 4}, botorch_mo.ZDT1, [11.0, 11.0], 121 - 1 / 3, id="zdt1"),
]  # fmt: skip


@pytest.fixture(scope="module")
def peft() -> PeftLike:
    return PeftLike()


def _all_problems() -> list[SyntheticProblem]:
    return [BraninCurrin(), DTLZ2(), VehicleSafety(), ZDT1(), PeftLike(), PeftLike(n_layers=3)]


def _params(problem: SyntheticProblem, x: list[float]) -> dict[str, float]:
    return {f"x{i}": v for i, v in enumerate(x)}


@pytest.mark.parametrize(("cls", "kwargs", "botorch_cls", "ref", "max_hv"), BOTORCH_CASES)
def test_botorch_problem_matches_botorch(cls, kwargs, botorch_cls, ref, max_hv) -> None:
    problem = cls(**kwargs)
    reference = botorch_cls(**kwargs)
    assert problem.reference_point == pytest.approx(
        dict(zip(problem.metric_names, ref, strict=True))
    )
    assert problem.max_hypervolume == pytest.approx(max_hv, rel=1e-9)
    assert problem.directions == ("minimize",) * len(ref)
    bounds = reference.bounds.numpy()
    assert [(p.low, p.high) for p in problem.space] == [tuple(b) for b in bounds.T]
    corners = [bounds[0], bounds[1], bounds.mean(axis=0)]
    rng = np.random.default_rng(0)
    points = corners + [bounds[0] + rng.random(bounds.shape[1]) * np.ptp(bounds, axis=0)
                        for _ in range(5)]  # fmt: skip
    expected = reference.evaluate_true(torch.tensor(np.array(points), dtype=torch.float64))
    for x, y in zip(points, expected.tolist(), strict=True):
        values = problem(_params(problem, list(x)), CTX)
        assert list(values) == list(problem.metric_names)
        assert list(values.values()) == pytest.approx(y, rel=1e-12)
    batch = problem.evaluate_batch([_params(problem, list(x)) for x in points])
    got = np.array([list(v.values()) for v in batch])
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-12)


def test_known_optima() -> None:
    # Branin's minimum 0.397887 at (pi, 2.275), rescaled into [0, 1]^2.
    branin = BraninCurrin().evaluate({"x0": (math.pi + 5) / 15, "x1": 2.275 / 15})
    assert branin["f0"] == pytest.approx(0.397887, abs=1e-6)
    # DTLZ2: with the distance variables at 0.5 the point lies on the unit sphere.
    dtlz = DTLZ2().evaluate({"x0": 1 / 3, **{f"x{i}": 0.5 for i in range(1, 6)}})
    assert (dtlz["f0"], dtlz["f1"]) == pytest.approx((math.cos(math.pi / 6), 0.5))
    # ZDT1: with the distance variables at 0, f1 = 1 - sqrt(f0).
    zdt = ZDT1().evaluate({"x0": 0.25, "x1": 0.0, "x2": 0.0, "x3": 0.0})
    assert (zdt["f0"], zdt["f1"]) == pytest.approx((0.25, 0.5))


@pytest.mark.parametrize("problem", _all_problems(), ids=lambda p: f"{p.name}-{len(p.space)}")
def test_random_params_validate_and_give_finite_metrics(problem: SyntheticProblem) -> None:
    rng = np.random.default_rng(1)
    names = {m.name for m in problem.metrics}
    assert set(problem.reference_point) == names
    for _ in range(50):
        params = problem.space.sample(rng)
        assert problem.space.validate(params) == params
        values = problem(params, TrialContext(trial_number=0, seed=3))
        assert set(values) == names
        assert all(isinstance(v, float) and math.isfinite(v) for v in values.values())


@pytest.mark.parametrize("problem", _all_problems(), ids=lambda p: f"{p.name}-{len(p.space)}")
def test_problems_survive_pickling(problem: SyntheticProblem) -> None:
    # Runners ship objectives to worker processes (Ray, multiprocessing).
    params = problem.space.sample(np.random.default_rng(9))
    copy = pickle.loads(pickle.dumps(problem))
    assert copy.evaluate(params) == problem.evaluate(params)
    assert copy.max_hypervolume == problem.max_hypervolume


@pytest.mark.parametrize("problem", _all_problems(), ids=lambda p: f"{p.name}-{len(p.space)}")
def test_random_sample_stays_below_the_maximum_hypervolume(problem: SyntheticProblem) -> None:
    rng = np.random.default_rng(2)
    results = problem.evaluate_batch([problem.space.sample(rng) for _ in range(2000)])
    hv = problem.hypervolume(results)
    assert problem.max_hypervolume is not None
    assert 0 < hv < problem.max_hypervolume


def test_branin_currin_dense_front_reaches_the_maximum_hypervolume() -> None:
    problem = BraninCurrin()

    def grid(x0: np.ndarray, x1: np.ndarray) -> tuple[np.ndarray, list[dict[str, float]]]:
        points = np.array(np.meshgrid(x0, x1)).reshape(2, -1).T
        return points, problem.evaluate_batch([{"x0": a, "x1": b} for a, b in points])

    # A coarse grid locates the Pareto set; a fine grid over its bounding box traces the front.
    coarse, results = grid(np.linspace(0, 1, 101), np.linspace(0, 1, 101))
    table = np.array([[r["f0"], r["f1"]] for r in results])
    pareto_inputs = coarse[pareto_mask(table, ["minimize", "minimize"])]
    low = np.clip(pareto_inputs.min(axis=0) - 0.02, 0, 1)
    high = np.clip(pareto_inputs.max(axis=0) + 0.02, 0, 1)
    _, fine = grid(np.linspace(low[0], high[0], 500), np.linspace(low[1], high[1], 300))
    hv = problem.hypervolume(fine)
    assert problem.max_hypervolume is not None
    assert 0.99 * problem.max_hypervolume < hv < 1.001 * problem.max_hypervolume


@pytest.mark.parametrize("problem", [DTLZ2(), DTLZ2(dim=5, num_objectives=3), ZDT1()],
                         ids=["dtlz2", "dtlz2-m3", "zdt1"])  # fmt: skip
def test_analytic_fronts_approach_the_exact_maximum(problem: SyntheticProblem) -> None:
    m = len(problem.metrics)
    if problem.name == "zdt1":
        # The Pareto set: x0 in [0, 1], the distance variables at 0.
        params = [{"x0": a, **{f"x{i}": 0.0 for i in range(1, 4)}} for a in np.linspace(0, 1, 400)]
    else:
        # The Pareto set: position variables free, distance variables at 0.5.
        d = len(problem.space)
        side = np.linspace(0.0, 1.0, 400 if m == 2 else 40)
        params = [
            {**{f"x{i}": float(v) for i, v in enumerate(position)},
             **{f"x{i}": 0.5 for i in range(m - 1, d)}}
            for position in itertools.product(side, repeat=m - 1)
        ]  # fmt: skip
    results = problem.evaluate_batch(params)
    for values in results:  # every front point is strictly better than the reference point
        assert all(values[k] < problem.reference_point[k] for k in values)
    hv = problem.hypervolume(results)
    assert problem.max_hypervolume is not None
    assert 0.97 * problem.max_hypervolume < hv <= problem.max_hypervolume * (1 + 1e-12)


def test_botorch_problem_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="dim > num_objectives") as info:
        DTLZ2(dim=3, num_objectives=3)
    assert info.value.path == ("dim",)
    with pytest.raises(ConfigError, match="integer"):
        ZDT1(dim=2.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="2 <= num_objectives"):
        DTLZ2(num_objectives=1)


def test_botorch_problem_reports_missing_parameters() -> None:
    with pytest.raises(ConfigError, match="'x1' is missing"):
        BraninCurrin().evaluate({"x0": 0.5})


def test_import_does_not_load_torch_or_botorch() -> None:
    code = (
        "import sys, paretune.objectives\n"
        "assert 'torch' not in sys.modules, 'torch'\n"
        "assert 'botorch' not in sys.modules, 'botorch'\n"
        "p = paretune.objectives.PeftLike()\n"
        "assert 'torch' not in sys.modules, 'PeftLike needs torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# PeftLike


def _config(problem: PeftLike, layers: list[int], module: str, size: int, lr: float) -> dict:
    params: dict = {name: i in layers for i, name in enumerate(problem.layer_names)}
    params.update(module=module, size=size, lr=lr)
    if module == "lora":
        params["lora_alpha_ratio"] = 2.0
    return params


def test_peft_like_parameter_counts_match_real_models() -> None:
    bert_base = PeftLike(n_layers=12)
    assert bert_base.base_parameters() == 109_482_240  # bert-base-uncased
    head = 768 * 2 + 2
    # peft's count for LoRA r=8 on query and value of bert-base.
    assert bert_base.trainable_parameters(12, "lora", 8) - head == 294_912
    # A Pfeiffer adapter of bottleneck 64 per layer: 2 * 768 * 64 + 64 + 768 parameters.
    assert bert_base.trainable_parameters(1, "serial", 64) - head == 99_136
    cost = bert_base.cost_pct(12, "lora", 8)
    assert cost == pytest.approx(100 * (294_912 + head) / (109_482_240 + 294_912 + head))


def test_peft_like_is_deterministic(peft: PeftLike) -> None:
    rng = np.random.default_rng(5)
    samples = [peft.space.sample(rng) for _ in range(20)]
    again = PeftLike()
    for params in samples:
        first = peft(params, TrialContext(trial_number=0, seed=1))
        assert peft(params, TrialContext(trial_number=7, seed=9)) == first
        assert again.evaluate(params) == first
    assert again.max_hypervolume == peft.max_hypervolume


def test_peft_like_noise_is_seeded_by_the_context() -> None:
    noisy = PeftLike(noise_std=0.01)
    params = noisy.pareto_set()[10]
    clean = noisy.evaluate(params)["score"]
    a = noisy(params, TrialContext(trial_number=0, seed=1))["score"]
    assert a == noisy(params, TrialContext(trial_number=0, seed=1))["score"]
    assert a != noisy(params, TrialContext(trial_number=0, seed=2))["score"]
    assert a != clean and abs(a - clean) < 0.1
    assert noisy.evaluate(params)["score"] == clean


def test_peft_like_cost_grows_with_size_and_active_layers(peft: PeftLike) -> None:
    for module in ("serial", "parallel", "lora"):
        costs = [peft.cost_pct(4, module, size) for size in range(1, 65)]
        assert all(a < b for a, b in itertools.pairwise(costs))
        by_layers = [peft.cost_pct(k, module, 8) for k in range(9)]
        assert all(a < b for a, b in itertools.pairwise(by_layers))
    # Through the objective: which layers are active does not matter, how many does.
    low = peft.evaluate(_config(peft, [0, 1], "serial", 8, 1e-3))["cost_pct"]
    high = peft.evaluate(_config(peft, [6, 7], "serial", 8, 1e-3))["cost_pct"]
    more = peft.evaluate(_config(peft, [5, 6, 7], "serial", 8, 1e-3))["cost_pct"]
    bigger = peft.evaluate(_config(peft, [6, 7], "serial", 9, 1e-3))["cost_pct"]
    assert low == high < more
    assert high < bigger


def test_peft_like_score_shape(peft: PeftLike) -> None:
    rng = np.random.default_rng(6)
    scores = [peft.evaluate(peft.space.sample(rng))["score"] for _ in range(500)]
    assert min(scores) >= 0.5 and max(scores) < 0.93
    # Upper layers matter more than lower ones.
    weights = _layer_weights(8)
    assert weights[-2:].mean() > weights[:2].mean() * 2
    best = peft.pareto_set()[-1]
    best_score = peft.evaluate(best)["score"]
    # The learning rate has a module- and size-specific optimum; moving away loses score.
    for factor in (0.5, 0.8, 1.25, 2.0):
        assert peft.evaluate({**best, "lr": best["lr"] * factor})["score"] < best_score
    # Diminishing returns in size at the best learning rate of each size.
    module = str(best["module"])
    layers = [i for i, name in enumerate(peft.layer_names) if best[name]]
    gains = []
    for size in (4, 8, 16, 32, 64):
        config = _config(peft, layers, module, size, 1e-3)
        lrs = np.geomspace(1e-5, 1e-2, 601)
        gains.append(max(peft.evaluate({**config, "lr": lr})["score"] for lr in lrs))
    steps = np.diff(gains)
    assert (steps > 0).all() and steps[-1] < steps[0]


def test_peft_like_lora_alpha_ratio_has_its_optimum_at_two(peft: PeftLike) -> None:
    lora = next(p for p in peft.pareto_set() if p["module"] == "lora")
    score = peft.evaluate(lora)["score"]
    for ratio in (0.25, 1.0, 4.0, 8.0):
        assert peft.evaluate({**lora, "lora_alpha_ratio": ratio})["score"] < score


def test_peft_like_without_layers_trains_only_the_head(peft: PeftLike) -> None:
    values = peft.evaluate(_config(peft, [], "lora", 64, 1e-3))
    assert values["score"] <= 0.52
    assert values["cost_pct"] == pytest.approx(peft.cost_pct(0, "serial", 1))


@pytest.mark.parametrize("n_layers", [1, 2, 5, 8, 10])
def test_peft_like_best_masks_match_brute_force(n_layers: int) -> None:
    weights = _layer_weights(n_layers)
    best = _best_masks(weights)
    for k in range(n_layers + 1):
        assert best[k].sum() == k
        brute = max(
            _coverage(weights, np.array(bits, dtype=bool))
            for bits in itertools.product([0, 1], repeat=n_layers)
            if sum(bits) == k
        )
        assert _coverage(weights, best[k]) == pytest.approx(brute, abs=1e-12)


def test_peft_like_best_masks_are_not_simply_the_top_layers() -> None:
    masks = _best_masks(_layer_weights(8))
    assert "".join("1" if on else "." for on in masks[3]) != ".....111"


def test_peft_like_pareto_set_attains_the_maximum_hypervolume(peft: PeftLike) -> None:
    front = peft.pareto_set()
    results = [peft.evaluate(peft.space.validate(p)) for p in front]
    assert peft.hypervolume(results) == pytest.approx(peft.max_hypervolume, rel=1e-12)
    costs = [r["cost_pct"] for r in results]
    scores = [r["score"] for r in results]
    assert costs == sorted(costs) and scores == sorted(scores)
    assert max(costs) * 1.1 == pytest.approx(peft.reference_point["cost_pct"])
    assert {p["module"] for p in front} == {"serial", "parallel", "lora"}
    # The Pareto set is a small part of the discrete space alone.
    discrete_size = 2**peft.n_layers * 3 * 64
    assert len(front) / discrete_size < 0.005


def test_peft_like_random_search_never_beats_the_front(peft: PeftLike) -> None:
    rng = np.random.default_rng(8)
    sample = peft.evaluate_batch([peft.space.sample(rng) for _ in range(2000)])
    front = [peft.evaluate(p) for p in peft.pareto_set()]
    table = np.array([[r["score"], r["cost_pct"]] for r in front + sample])
    mask = pareto_mask(table, ["maximize", "minimize"])
    assert mask[: len(front)].all()
    assert peft.max_hypervolume is not None
    assert peft.hypervolume(sample) < 0.97 * peft.max_hypervolume


def test_peft_like_is_hard_for_random_search_at_100_evaluations(peft: PeftLike) -> None:
    assert peft.max_hypervolume is not None
    fractions = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        results = peft.evaluate_batch([peft.space.sample(rng) for _ in range(100)])
        fractions.append(peft.hypervolume(results) / peft.max_hypervolume)
    assert 0.3 < np.mean(fractions) < 0.85


@pytest.mark.parametrize("n_layers", [1, 12, 32])
def test_peft_like_other_depths(n_layers: int) -> None:
    problem = PeftLike(n_layers=n_layers)
    assert len(problem.space) == n_layers + 4
    assert problem.max_hypervolume is not None and problem.max_hypervolume > 0
    results = [problem.evaluate(p) for p in problem.pareto_set()]
    assert problem.hypervolume(results) == pytest.approx(problem.max_hypervolume)


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"n_layers": 0}, ("n_layers",)),
        ({"n_layers": 8.0}, ("n_layers",)),
        ({"hidden_size": 32}, ("hidden_size",)),
        ({"noise_std": -0.1}, ("noise_std",)),
        ({"noise_std": "x"}, ("noise_std",)),
    ],
)
def test_peft_like_settings_are_checked(kwargs: dict, path: tuple) -> None:
    with pytest.raises(ConfigError) as info:
        PeftLike(**kwargs)
    assert info.value.path == path
