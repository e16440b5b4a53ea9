"""Re-evaluation of chosen trials with several seeds (``paretune reevaluate``)."""

from __future__ import annotations

import copy
import csv
import json
import os
import signal
import statistics
import textwrap
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from paretune import ConfigError
from paretune.cli import main
from paretune.search import SearchInterrupted, handle_stop_signal, open_store, run_search
from paretune.search._reevaluate import Reevaluation, reevaluation_study_name
from paretune.spec import SearchSpec, load_spec
from paretune.trials_store import dominates as dominates_values
from tests.conftest import xy_spec

NOISY_OBJECTIVE = '''
import json
import os
import time

def objective(params, ctx):
    """f0 = x, f1 = 1 - x, plus a seed-dependent offset, plus 0.5 at the search's fidelity."""
    if ctx.settings.get("interrupt_seed") == ctx.seed:
        raise KeyboardInterrupt
    if ctx.settings.get("die_seed") == ctx.seed:
        os._exit(3)  # the worker process dies (as under the OOM killer)
    time.sleep(ctx.settings.get("sleep_per_seed", 0.0) * ctx.seed)
    offset = 0.0 if ctx.budget == 1.0 else 0.5
    noise = 0.01 * ctx.seed
    line = {
        "x": params["x"],
        "seed": ctx.seed,
        "pid": os.getpid(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }
    with open(ctx.settings["log"], "a") as f:
        f.write(json.dumps(line) + "\\n")
    return {"f0": params["x"] + noise + offset, "f1": 1.0 - params["x"] + noise + offset}
'''


def noisy_spec(tmp_path: Path, **settings: Any) -> dict[str, Any]:
    src = tmp_path / "noisy.py"
    src.write_text(textwrap.dedent(NOISY_OBJECTIVE))
    return {
        "study": "noisy",
        "run_dir": str(tmp_path / "run"),
        "objective": {
            "type": "python",
            "settings": {
                "target": f"{src}:objective",
                "log": str(tmp_path / "log.jsonl"),
                **settings,
            },
            "metrics": [
                {"name": "f0", "direction": "minimize"},
                {"name": "f1", "direction": "minimize"},
            ],
        },
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "controller": {"name": "random", "seed": 0},
        "budget": {"trials": 6},
        # A baseline that every other trial beats on one metric and ties on none.
        "enqueue": [{"label": "far", "params": {"x": 0.5}}],
    }


def evaluations(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]


@pytest.fixture
def searched(tmp_path: Path) -> dict[str, Any]:
    data = noisy_spec(tmp_path)
    run_search(load_spec(data).plan())
    return data


@pytest.mark.slow
def test_pareto_and_baselines_are_trained_again_with_each_seed_at_full_fidelity(
    tmp_path: Path, searched: dict[str, Any]
) -> None:
    spec = load_spec(searched)
    before = len(evaluations(tmp_path))
    front = {t.number for t in open_store(spec.plan(), create=False, mlflow=False).pareto_trials()}
    results = spec.reevaluate(pareto=True, baselines=True, seeds=3, full_fidelity=True)
    assert [r.source.number for r in results] == sorted(front | {0})  # 0: the baseline
    baseline = next(r for r in results if r.baseline)
    assert baseline.source.number == 0 and baseline.label == "far" and baseline.name == "far"
    assert len(evaluations(tmp_path)) - before == len(results) * 3
    for r in results:
        x = r.source.params["x"]
        assert sorted(r.runs) == [0, 1, 2]
        expected = [x + 0.01 * seed for seed in range(3)]  # full fidelity: no offset
        assert r.values("f0") == pytest.approx(expected)
        assert r.mean("f0") == pytest.approx(statistics.fmean(expected))
        assert r.std("f0") == pytest.approx(statistics.stdev(expected))
        # The search-time values keep their own seed (the trial number here) and fidelity.
        assert r.source.values[0] == pytest.approx(x + 0.01 * r.source.number + 0.5)


@pytest.mark.slow
def test_a_second_call_evaluates_only_what_is_missing(
    tmp_path: Path, searched: dict[str, Any]
) -> None:
    spec = load_spec(searched)
    spec.reevaluate(numbers=[1, 2], seeds=2)
    before = len(evaluations(tmp_path))
    results = spec.reevaluate(numbers=[1, 2], seeds=3)
    assert len(evaluations(tmp_path)) - before == 2  # only seed 2 of each
    assert all(sorted(r.runs) == [0, 1, 2] for r in results)
    # Full fidelity is a separate record: nothing of the above counts for it.
    before = len(evaluations(tmp_path))
    spec.reevaluate(numbers=[1], seeds=1, full_fidelity=True)
    assert len(evaluations(tmp_path)) - before == 1
    storage = f"sqlite:///{spec.resolved_run_dir / 'study.db'}"
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert names == {
        "noisy",
        reevaluation_study_name("noisy", full_fidelity=False),
        reevaluation_study_name("noisy", full_fidelity=True),
    }


def test_dominance_is_judged_on_the_means_over_seeds() -> None:
    def result(number: int, f0: list[float], f1: list[float]) -> Reevaluation:
        trial = optuna.trial.create_trial(
            params={"x": 0.0},
            distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
            values=[0.0, 0.0],
        )
        r = Reevaluation(trial, None, baseline=False)
        r.runs = {i: {"f0": a, "f1": b} for i, (a, b) in enumerate(zip(f0, f1, strict=True))}
        return r

    names, directions = ["f0", "f1"], ["minimize", "maximize"]

    def dominates(
        a: Reevaluation, b: Reevaluation, names: list[str], directions: list[str]
    ) -> bool:
        means = [[r.mean(n) for n in names] for r in (a, b)]
        return bool(dominates_values(means[0], means[1], directions))

    base = result(0, [1.0, 1.2], [0.5, 0.5])  # means 1.1, 0.5
    assert dominates(result(1, [1.0, 1.2], [0.6, 0.6]), base, names, directions)
    assert dominates(result(2, [0.9, 1.1], [0.5, 0.5]), base, names, directions)
    assert not dominates(result(3, [1.0, 1.2], [0.5, 0.5]), base, names, directions)  # equal
    assert not dominates(result(4, [0.5, 0.5], [0.4, 0.4]), base, names, directions)
    assert not dominates(result(5, [], []), base, names, directions)  # nothing completed


def variant(searched: dict[str, Any], **settings: Any) -> SearchSpec:
    """The searched spec with more objective settings (faults of the noisy objective)."""
    data = copy.deepcopy(searched)
    data["objective"]["settings"].update(settings)
    return load_spec(data)


def _running(spec: Any, *, full_fidelity: bool = False) -> list[int]:
    storage = f"sqlite:///{spec.resolved_run_dir / 'study.db'}"
    name = reevaluation_study_name(spec.study, full_fidelity=full_fidelity)
    companion = optuna.load_study(study_name=name, storage=storage)
    return [t.number for t in companion.trials if t.state == optuna.trial.TrialState.RUNNING]


@pytest.mark.slow
def test_the_spec_local_workers_run_reevaluations_with_the_same_results(
    tmp_path: Path, searched: dict[str, Any]
) -> None:
    sequential = load_spec(searched).reevaluate(numbers=[1, 2, 3], seeds=2)
    assert {e["pid"] for e in evaluations(tmp_path)} == {os.getpid()}  # in this process
    data = copy.deepcopy(searched)
    data["runner"] = {"type": "local", "n_jobs": 2, "threads": 3}
    before = len(evaluations(tmp_path))
    parallel = load_spec(data).reevaluate(numbers=[1, 2, 3], seeds=2, full_fidelity=True)
    new = evaluations(tmp_path)[before:]
    assert len(new) == 6
    assert os.getpid() not in {e["pid"] for e in new}  # the spec's two worker processes
    assert {e["threads"] for e in new} == {"3"}  # the spec's threads per worker
    for a, b in zip(sequential, parallel, strict=True):
        assert a.source.number == b.source.number and sorted(b.runs) == [0, 1]
        # Full fidelity drops the search's 0.5 offset and nothing else.
        assert b.values("f0") == pytest.approx([v - 0.5 for v in a.values("f0")])
    assert _running(load_spec(data), full_fidelity=True) == []


@pytest.mark.slow
def test_a_dead_worker_fails_its_evaluations_and_the_rest_go_on(
    tmp_path: Path, searched: dict[str, Any]
) -> None:
    results = variant(searched, die_seed=1).reevaluate(numbers=[2], seeds=4, n_jobs=2, threads=1)
    r = results[0]
    assert 1 in r.failed and "worker process died" in r.failed[1]
    # The seeds that shared the broken pool failed with it; the call went on to the end.
    assert set(r.runs) | set(r.failed) == {0, 1, 2, 3}
    assert _running(load_spec(searched)) == []
    # Lost with a worker, not failed by the objective: the next call does them again.
    before = len(evaluations(tmp_path))
    again = load_spec(searched).reevaluate(numbers=[2], seeds=4, n_jobs=2, threads=1)
    assert sorted(again[0].runs) == [0, 1, 2, 3] and not again[0].failed
    redone = sorted(e["seed"] for e in evaluations(tmp_path)[before:])
    assert redone == sorted(r.failed)


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_the_next_call_does_the_rest(
    tmp_path: Path, searched: dict[str, Any]
) -> None:

    def stop_after_the_first(done: int, *args: Any) -> None:
        handle_stop_signal(signal.SIGINT, None)  # what Ctrl-C does in `paretune reevaluate`

    with pytest.raises(SearchInterrupted):
        variant(searched, sleep_per_seed=5.0).reevaluate(  # seed 1 still runs when seed 0 is done
            numbers=[4],
            seeds=4,
            n_jobs=2,
            threads=1,
            progress=stop_after_the_first,
        )
    assert [e["seed"] for e in evaluations(tmp_path)][-1:] == [0]
    assert _running(load_spec(searched)) == []  # seed 1 was killed and failed, 2, 3 never began
    results = load_spec(searched).reevaluate(numbers=[4], seeds=4, n_jobs=2, threads=1)
    assert sorted(results[0].runs) == [0, 1, 2, 3]
    assert sorted(e["seed"] for e in evaluations(tmp_path)[-3:]) == [1, 2, 3]


@pytest.mark.slow
def test_an_interrupted_reevaluation_is_finished_by_the_next_call(
    tmp_path: Path, searched: dict[str, Any]
) -> None:
    # One job at a time: the objective runs in this process, so a KeyboardInterrupt in it (what
    # Ctrl-C raises there) stops the call. (Worker processes ignore SIGINT; the test above
    # stops a call with workers the way Ctrl-C does, through the driver.)
    with pytest.raises(SearchInterrupted):
        variant(searched, interrupt_seed=1).reevaluate(numbers=[3], seeds=3, n_jobs=1)
    assert _running(load_spec(searched)) == []  # nothing left RUNNING
    assert [e["seed"] for e in evaluations(tmp_path)][-1] == 0
    results = load_spec(searched).reevaluate(numbers=[3], seeds=3, n_jobs=1)
    assert sorted(results[0].runs) == [0, 1, 2] and not results[0].failed
    assert [e["seed"] for e in evaluations(tmp_path)][-2:] == [1, 2]


@pytest.mark.slow
def test_a_keyboard_interrupt_raised_in_a_worker_fails_only_that_evaluation(
    tmp_path: Path, searched: dict[str, Any]
) -> None:
    # Workers ignore SIGINT (Ctrl-C reaches the driver), so a KeyboardInterrupt in a worker is
    # the objective's own doing: that evaluation fails with its traceback, the others finish.
    results = variant(searched, interrupt_seed=1).reevaluate(numbers=[3], seeds=3, n_jobs=2)
    assert sorted(results[0].runs) == [0, 2]
    assert list(results[0].failed) == [1]
    assert _running(load_spec(searched)) == []


@pytest.mark.slow
def test_reevaluations_are_mlflow_runs_under_the_study_parent(
    searched: dict[str, Any],
) -> None:
    spec = load_spec(searched)
    spec.reevaluate(numbers=[0], seeds=2, full_fidelity=True)
    client = MlflowClient(f"sqlite:///{spec.resolved_run_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("noisy")
    runs = client.search_runs([experiment.experiment_id], "tags.`paretune.reevaluation_of` = '0'")
    assert sorted(r.data.tags["paretune.seed"] for r in runs) == ["0", "1"]
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    trial_runs = client.search_runs([experiment.experiment_id], "tags.`paretune.trial` = '0'")
    original = [r for r in trial_runs if "paretune.reevaluation_of" not in r.data.tags]
    assert parents == {original[0].data.tags["mlflow.parentRunId"]}
    assert all(r.data.tags["paretune.fidelity"] == "full" for r in runs)
    assert all(r.data.tags["paretune.label"] == "far" for r in runs)  # trial 0 is the baseline
    names = sorted(r.info.run_name for r in runs)
    assert names == ["t000 reeval-full s0 far", "t000 reeval-full s1 far"]
    assert original[0].info.run_name == "t000 far"
    assert all(r.info.status == "FINISHED" and "f0" in r.data.metrics for r in runs)


@pytest.mark.slow
def test_bad_selections_say_what_exists(searched: dict[str, Any]) -> None:
    spec = load_spec(searched)
    with pytest.raises(ConfigError, match="say which trials"):
        spec.reevaluate()
    with pytest.raises(ConfigError, match=r"\[42\].*complete trials: 0-5"):
        spec.reevaluate(numbers=[42])
    with pytest.raises(ConfigError, match="seeds"):
        spec.reevaluate(numbers=[0], seeds=0)
    with pytest.raises(ConfigError, match="`n_jobs` must be an integer >= 1"):
        spec.reevaluate(numbers=[0], n_jobs=0)
    with pytest.raises(ConfigError, match="`threads` must be an integer >= 1"):
        spec.reevaluate(numbers=[0], n_jobs=2, threads=0)


@pytest.mark.slow
def test_full_fidelity_needs_an_objective_that_has_it(tmp_path: Path) -> None:
    data = {
        "study": "bc",
        "run_dir": str(tmp_path / "run"),
        "objective": {"type": "branin_currin"},
        "controller": {"name": "random"},
        "budget": {"trials": 3},
    }
    run_search(load_spec(data).plan())
    with pytest.raises(ConfigError, match="no full-fidelity mode"):
        load_spec(data).reevaluate(pareto=True, full_fidelity=True)


@pytest.mark.slow
def test_cli_prints_mean_and_spread_and_which_trials_beat_the_baselines(
    tmp_path: Path, searched: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(searched))
    out_csv = tmp_path / "re.csv"
    args = ["reevaluate", str(path), "--pareto", "--seeds", "2", "--full-fidelity"]
    args += ["--jobs", "2", "--threads", "1"]
    assert main([*args, "-o", str(out_csv)]) == 0
    out = capsys.readouterr().out
    front = open_store(load_spec(searched).plan(), create=False, mlflow=False).pareto_trials()
    total = 2 * len({0} | {t.number for t in front})  # the front and the baseline, 2 seeds
    assert f"[{total}/{total}]" in out  # progress, one line per evaluation
    assert "f0 mean ± std" in out
    # x = 0.5 is on the front: no trial is better in both metrics.
    assert "far: not dominated by any re-evaluated search trial" in out
    assert os.getpid() not in {e["pid"] for e in evaluations(tmp_path)[-total:]}  # --jobs 2
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == total and {r["seed"] for r in rows} == {"0", "1"}
    with pytest.raises(SystemExit) as info:
        main(["reevaluate", str(path), "--trials", "x"])
    assert info.value.code == 2
    assert "expected trial numbers" in capsys.readouterr().err


NEAR_FRONT_OBJECTIVE = '''
def objective(params, ctx):
    """f0 = x, f1 = 1 - x + y: y > 0 moves a trial behind the front by y."""
    return {"f0": params["x"], "f1": 1.0 - params["x"] + params["y"]}
'''


def near_front_spec(tmp_path: Path) -> dict[str, Any]:
    src = tmp_path / "near.py"
    src.write_text(textwrap.dedent(NEAR_FRONT_OBJECTIVE))
    points = [(0.2, 0.0), (0.2, 0.05), (0.2, 0.5), (0.6, 0.0), (0.6, 0.04)]
    spec = xy_spec(tmp_path, f"{src}:objective", study="near", trials=len(points))
    spec["enqueue"] = [{"params": {"x": x, "y": y}} for x, y in points]
    return spec


def test_pareto_tolerance_adds_the_trials_within_the_margin_of_the_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = near_front_spec(tmp_path)
    run_search(load_spec(data).plan())
    store = open_store(load_spec(data).plan(), create=False, mlflow=False)
    assert [t.number for t in store.pareto_trials()] == [0, 3]
    # Trials 1 and 4 are 0.05 and 0.04 behind the front in f1 only; trial 2 is 0.5 behind.
    assert sorted(t.number for t in store.pareto_trials({"f1": 0.1})) == [0, 1, 3, 4]
    assert sorted(t.number for t in store.pareto_trials({"f1": 0.045})) == [0, 3, 4]
    with pytest.raises(ConfigError, match=r"does not optimise.*\['f0', 'f1'\]"):
        store.pareto_trials({"accuracy": 0.1})

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    base = ["reevaluate", str(path), "--seeds", "1", "--no-baselines"]  # all 5 are enqueued
    assert main([*base, "--pareto", "--pareto-tolerance", "f1=0.1"]) == 0
    out = capsys.readouterr().out
    assert "[4/4]" in out and "[5/" not in out  # trials 0, 1, 3, 4; not 2
    results = load_spec(data).reevaluate(pareto=True, pareto_tolerance={"f1": 0.1}, seeds=1)
    assert [r.source.number for r in results] == [0, 1, 3, 4]
    assert main([*base, "--pareto", "--pareto-tolerance", "accuracy=0.1"]) == 2
    assert "does not optimise" in capsys.readouterr().err
    assert main([*base, "--trials", "1", "--pareto-tolerance", "f1=0.1"]) == 2
    assert "--pareto-tolerance needs --pareto" in capsys.readouterr().err
    assert (
        main([*base, "--pareto", "--pareto-tolerance", "f1=0.1", "--pareto-tolerance", "f1=0.2"])
        == 2
    )
    assert "gives f1 more than once" in capsys.readouterr().err
    for bad in ("f1", "f1=-0.1", "=0.1", "f1=nan"):
        with pytest.raises(SystemExit) as info:
            main([*base, "--pareto", "--pareto-tolerance", bad])
        assert info.value.code == 2
        assert "expected METRIC=MARGIN" in capsys.readouterr().err
