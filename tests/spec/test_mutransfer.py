"""The muTransfer workflow: one study, one MLflow parent, a child per run, width on every trial;
resumable after kill -9 without repeating finished runs."""

from __future__ import annotations

import gzip
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from paretune import ConfigError
from paretune.cli import main
from paretune.spec import CoordCheckFailed, run_mutransfer
from paretune.trials_store import LABEL_ATTR

SETTINGS = {
    "head_dim": 16,
    "base_width": 16,
    "depth": 1,
    "sequence_length": 16,
    "batch_size": 4,
    "steps": 4,
    "eval_windows": 4,
    "evals": 1,
    "validation_fraction": 0.2,
}


@pytest.fixture
def spec(tmp_path: Path) -> dict[str, Any]:
    text = "".join(
        f"{i}: it is a truth universally acknowledged, that a fox.\n" for i in range(200)
    )
    corpus = tmp_path / "corpus.txt.gz"
    with gzip.open(corpus, "wt", encoding="utf-8") as f:
        f.write(text)
    return {
        "study": "mt",
        "run_dir": str(tmp_path / "run"),
        "objective": {"type": "lm", "settings": {**SETTINGS, "data": [str(corpus)]}},
        "mutransfer": {
            "proxy_widths": [16, 32],
            "target_widths": [64],
            "seeds": [0, 1],
            "lr_grid": {"low": -8, "high": -7, "step": 0.5},
            "verify": [0.5, 1.0, 2.0],
            # One seed of a 1-block model on a tiny corpus measures activations too noisily for
            # the default tolerance; the check at its defaults is tests/test_coord_check.py's.
            "coord_check": {"widths": [16, 32, 64], "steps": 4, "seeds": 1, "tolerance": 0.5},
        },
        "runner": {"type": "local", "n_jobs": 1},
    }


# 2 proxy widths x 3 learning rates x 2 seeds, then 3 learning rates x 2 seeds at the target.
RUNS = 2 * 3 * 2 + 3 * 2


def _trials(spec: dict[str, Any]) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{spec['run_dir']}/study.db"
    return optuna.load_study(study_name=spec["study"], storage=storage).get_trials()


def _mlflow(spec: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{spec['run_dir']}/mlflow.db")
    experiment = client.get_experiment_by_name(spec["study"])
    runs = client.search_runs([experiment.experiment_id], max_results=10_000)
    parents = [r for r in runs if r.data.tags.get("paretune.role") == "study"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_the_workflow_runs_every_stage_in_one_study(spec: dict[str, Any]) -> None:
    lines: list[str] = []
    result = run_mutransfer(spec, say=lines.append)
    assert result.coord_check is not None and result.coord_check.ok
    assert sorted(result.proxy_best) == [16, 32]
    assert set(result.chosen) == {"learning_rate"}
    trials = _trials(spec)
    assert len(trials) == RUNS
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all({"width", "seed", "learning_rate"} <= set(t.params) for t in trials)
    assert sorted({t.params["width"] for t in trials}) == [16, 32, 64]
    labels = [t.user_attrs[LABEL_ATTR] for t in trials]
    assert len(set(labels)) == RUNS
    # The target ran at the learning rate chosen on the proxies, and at half and twice it.
    target = sorted({t.params["learning_rate"] for t in trials if t.params["width"] == 64})
    lr = result.chosen["learning_rate"]
    assert target == pytest.approx([lr / 2, lr, lr * 2])
    parents, children = _mlflow(spec)
    assert len(parents) == 1 and len(children) == RUNS
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert result.figure is not None and "width 64" in result.figure.read_text()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{spec['run_dir']}/mlflow.db")
    logged = {a.path for a in client.list_artifacts(parents[0].info.run_id, "mutransfer")}
    assert logged == {
        "mutransfer/mutransfer.html", "mutransfer/mutransfer.csv", "mutransfer/coord_check.json",
    }  # fmt: skip
    assert any(line.strip().startswith("decision:") for line in lines)
    # Step Law beside the found rate: its own rate per width, and its form fitted to the study.
    assert sorted(result.step_law) == [16, 32, 64]
    assert any(
        line.startswith("Step Law's form fitted to the proxies' best rates") for line in lines
    )
    # The study's report (kept up to date by each stage) draws the transfer figure, and the
    # read-only commands take the workflow's spec.
    report = Path(spec["run_dir"]) / "report.html"
    assert '<section id="mutransfer">' in report.read_text(encoding="utf-8")
    path = Path(spec["run_dir"]) / "mutransfer-spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = Path(spec["run_dir"]) / "again.html"
    assert main(["report", str(path), "-o", str(out), "--figures", "mutransfer"]) == 0
    assert '<section id="mutransfer">' in out.read_text(encoding="utf-8")
    assert main(["status", str(path)]) == 0

    # A second run finds everything finished and trains nothing.
    again: list[str] = []
    run_mutransfer(spec, say=again.append)
    assert len(_trials(spec)) == RUNS
    assert "coordinate check: the result of an earlier run (same settings)" in again
    assert any("finished earlier" in line and "12 run(s), 12" in line for line in again)


@pytest.mark.slow
def test_kill_9_and_rerun_completes_without_repeating_finished_runs(
    spec: dict[str, Any], tmp_path: Path
) -> None:
    spec["runner"] = {"type": "local", "n_jobs": 2, "threads": 1}
    spec["objective"]["settings"]["steps"] = 40  # long enough to be killed inside a run
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "paretune.cli", "mutransfer", str(path)]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    done = 0
    while done < 5:  # the event: five runs recorded COMPLETE in the study
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "no five runs finished in 10 minutes"
        try:
            done = sum(t.state.name == "COMPLETE" for t in _trials(spec))
        except (KeyError, Exception):  # the study is not created yet
            done = 0
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t.user_attrs[LABEL_ATTR] for t in _trials(spec) if t.state.name == "COMPLETE"}

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    trials = _trials(spec)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    labels = [t.user_attrs[LABEL_ATTR] for t in complete]
    assert len(labels) == len(set(labels)) == RUNS  # every run once, none repeated
    assert before <= set(labels)
    # Runs killed mid-way were failed and queued again, not counted twice.
    assert len(trials) - len(complete) == sum(t.state.name == "FAIL" for t in trials)
    parents, _ = _mlflow(spec)
    assert len(parents) == 1


def test_a_failing_coordinate_check_stops_before_any_proxy(spec: dict[str, Any]) -> None:
    spec["objective"]["settings"]["parametrization"] = "sp"
    spec["mutransfer"]["coord_check"] = {
        "widths": [16, 32, 64, 128], "steps": 4, "seeds": 1, "learning_rate": 0.01,
    }  # fmt: skip
    with pytest.raises(CoordCheckFailed, match="drifts with width"):
        run_mutransfer(spec, say=lambda _: None)
    assert not (Path(spec["run_dir"]) / "study.db").exists()


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"objective": {"type": "zdt1"}}, "objective.type"),
        ({"mutransfer": {"proxy_widths": [64], "target_widths": [32]}}, "mutransfer.target_widths"),
        ({"mutransfer": {"proxy_widths": [16], "target_widths": [32], "lr_prior": "steplaw",
                         "lr_grid": {"low": -8, "high": -6}}}, "mutransfer.lr_grid.low"),
        ({"mutransfer": {"proxy_widths": [16], "target_widths": [32]}}, "mutransfer.lr_grid"),
        ({"space": {"x": {"type": "float", "low": 0, "high": 1}}}, "space"),
        ({"budget": {"trials": 5}}, "budget.trials"),
        ({"pruner": {"name": "median"}}, "pruner.name"),
        ({"mutransfer": {"proxy_widths": [16], "target_widths": [40],
                         "lr_grid": {"low": -8, "high": -6}}}, "mutransfer.target_widths"),
    ],
)  # fmt: skip
def test_bad_sections_name_the_field(
    spec: dict[str, Any], change: dict[str, Any], path: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        run_mutransfer({**spec, **change}, say=lambda _: None)
    assert ".".join(map(str, caught.value.path)) == path


def test_settings_the_workflow_sets_itself_are_refused(spec: dict[str, Any]) -> None:
    spec["objective"]["settings"]["width_fidelity"] = True
    with pytest.raises(ConfigError) as caught:
        run_mutransfer(spec, say=lambda _: None)
    assert caught.value.path == ("objective", "settings", "width_fidelity")
    del spec["objective"]["settings"]["width_fidelity"]
    spec["objective"]["settings"]["schedule"] = {"type": "power"}
    spec["mutransfer"]["lr_prior"] = "steplaw"
    spec["mutransfer"]["lr_grid"] = {}
    with pytest.raises(ConfigError, match="power schedule") as caught:
        run_mutransfer(spec, say=lambda _: None)
    assert caught.value.path == ("mutransfer", "lr_prior")


def test_steplaw_centres_the_grid(spec: dict[str, Any]) -> None:
    from paretune.objectives.lm import LM
    from paretune.search.steplaw import step_law_lr

    spec["mutransfer"]["lr_prior"] = "steplaw"
    spec["mutransfer"]["lr_grid"] = {"step": 0.5, "octaves": 0.5}
    spec["mutransfer"]["target_widths"] = [64]
    lines: list[str] = []
    run_mutransfer(spec, say=lines.append)
    lm = LM(**spec["objective"]["settings"])
    # Under muP the searched rate is the base width's, where muP equals SP: Step Law there.
    base = spec["objective"]["settings"]["base_width"]
    centre = math.log2(float(step_law_lr(lm.non_embedding_params(base), lm.tokens)))
    snapped = round(centre / 0.5) * 0.5
    proxy = sorted({t.params["learning_rate"] for t in _trials(spec) if t.params["width"] == 32})
    assert proxy == pytest.approx([2 ** (snapped - 0.5), 2**snapped, 2 ** (snapped + 0.5)])


def test_independent_search_sweeps_each_multiplier_alone_at_the_chosen_lr(
    spec: dict[str, Any],
) -> None:
    spec["mutransfer"]["search"] = "independent"
    spec["mutransfer"]["multipliers"] = {"output_multiplier": [0.5, 2.0]}
    spec["mutransfer"]["coord_check"] = {"enabled": False}
    result = run_mutransfer(spec, say=lambda _: None)
    assert set(result.chosen) == {"learning_rate", "output_multiplier"}
    trials = _trials(spec)
    # 12 proxy runs (multiplier at its setting, 1), 2 values x 2 widths x 2 seeds, 6 targets.
    assert len(trials) == 12 + 8 + 6
    sweeps = [t for t in trials if t.user_attrs[LABEL_ATTR].startswith("multiplier:")]
    assert {t.params["learning_rate"] for t in sweeps} == {result.chosen["learning_rate"]}
    assert {t.params["output_multiplier"] for t in sweeps} == {0.5, 2.0}
    targets = [t for t in trials if t.params["width"] == 64]
    assert {t.params["output_multiplier"] for t in targets} == {result.chosen["output_multiplier"]}


def test_a_controller_proposes_the_proxies_learning_rates(spec: dict[str, Any]) -> None:
    spec["mutransfer"].update(
        search="controller", controller_trials=3, seeds=[0], coord_check={"enabled": False}
    )
    spec["controller"] = {"name": "random", "seed": 1}
    result = run_mutransfer(spec, say=lambda _: None)
    trials = _trials(spec)
    assert len(trials) == 2 * 3 + 3
    proxies = [t for t in trials if t.params["width"] in (16, 32)]
    assert len({t.params["learning_rate"] for t in proxies}) == 6  # proposed, not a grid
    # Within the study's range: the grid's (2^-8..2^-7) widened by the verify factors.
    assert all(2.0**-9 <= t.params["learning_rate"] <= 2.0**-6 for t in proxies)
    targets = [t.params["learning_rate"] for t in trials if t.params["width"] == 64]
    assert all(2.0**-9 <= lr <= 2.0**-6 for lr in targets)
    best32 = min((t for t in proxies if t.params["width"] == 32), key=lambda t: t.values[0])
    assert result.chosen["learning_rate"] == best32.params["learning_rate"]


def test_run_points_a_mutransfer_spec_to_its_command(spec: dict[str, Any]) -> None:
    from paretune.spec import load_spec

    with pytest.raises(ConfigError, match="run it with `paretune mutransfer SPEC`") as caught:
        load_spec({**spec, "budget": {"trials": 1}})
    assert caught.value.path == ("mutransfer",)
