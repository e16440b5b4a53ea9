"""``paretune dac SPEC`` and a saved policy reused by ``paretune run --policy``, on the noisy
quadratic: the spec's errors, the study's guards (one driver, the same instances) and the
paired held-out table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from paretune import ConfigError, StudyError
from paretune.cli import main
from paretune.dashboards import paired_summary
from paretune.objectives import Metric
from paretune.search.dac import DRIVER_ATTR, claim_driver, load_policy
from paretune.spaces.dynamic import DecisionState
from paretune.spec import run_dac_spec
from paretune.trials_store import StudyConfig, TrialsStore, owner_token

DYNAMIC = {"actions": [0.5, 1.0, 2.0], "low": 0.01, "high": 1.6, "interval": 10}


def _spec(tmp_path: Path, **dac: Any) -> dict[str, Any]:
    return {
        "study": "dac-test",
        "run_dir": str(tmp_path / "run"),
        "objective": {
            "type": "noisy_quadratic",
            "settings": {"steps": 40, "dim": 8, "learning_rate": 0.1, "dynamic": DYNAMIC},
        },
        "dac": {
            "instances": {"seed": [0, 1, 2, 3]},
            "held_out": {"seed": [100, 101]},
            "episodes": 8,
            "batch": 4,
            "trainer": {"lr": 0.05},
            "policy": {"features": ["progress", "log2_value"], "hidden": 0},
            **dac,
        },
    }


def _write(tmp_path: Path, spec: dict[str, Any], name: str = "dac.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_paretune_dac_trains_evaluates_and_a_search_reuses_the_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _write(tmp_path, _spec(tmp_path))
    assert main(["dac", spec, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "paired difference (policy - static) over 2 instances" in out
    policy_file = tmp_path / "run" / "policy.json"
    assert f"policy saved: {policy_file}" in out
    assert (tmp_path / "run" / "report.html").is_file()
    policy = load_policy(policy_file)
    assert policy.updates == 2
    study = optuna.load_study(study_name="dac-test", storage=f"sqlite:///{tmp_path}/run/study.db")
    labels = sorted(str(t.user_attrs.get("paretune.label")) for t in study.trials)
    assert labels.count("None") == 8
    assert {"eval 0", "eval 1", "static 0", "static 1"} <= set(labels)
    # `paretune status` reads a DAC spec's study.
    assert main(["status", spec]) == 0
    capsys.readouterr()

    # The saved policy drives a plain search's trials: every decision is the greedy one.
    search = {
        "study": "reuse",
        "run_dir": str(tmp_path / "search"),
        "objective": _spec(tmp_path)["objective"],
        "space": {"seed": {"type": "int", "low": 0, "high": 10**6}},
        "controller": {"name": "random", "seed": 0},
        "budget": {"trials": 2},
    }
    path = _write(tmp_path, search, "search.yaml")
    assert main(["run", path, "--no-progress", "--policy", str(policy_file)]) == 0
    capsys.readouterr()
    reused = optuna.load_study(study_name="reuse", storage=f"sqlite:///{tmp_path}/search/study.db")
    for t in reused.trials:
        trajectory = t.user_attrs["paretune.trajectory"]
        assert len(trajectory) == 4  # 40 steps, a decision every 10
        for d in trajectory:
            state = DecisionState.from_dict(d["state"])
            assert d["action"] == int(policy.probabilities(state).argmax())


def test_a_policy_for_another_parameter_is_refused_with_the_difference(tmp_path: Path) -> None:
    spec = _write(tmp_path, _spec(tmp_path))
    assert main(["dac", spec, "--no-progress"]) == 0
    other = _spec(tmp_path)["objective"]
    other["settings"]["dynamic"] = {**DYNAMIC, "interval": 20}
    search = {
        "study": "other",
        "run_dir": str(tmp_path / "other"),
        "objective": other,
        "space": {"seed": {"type": "int", "low": 0, "high": 3}},
        "budget": {"trials": 1},
    }
    from paretune.spec import load_spec

    with pytest.raises(ConfigError, match=r"interval: policy 10, objective 20"):
        load_spec(search).policy_decider(tmp_path / "run" / "policy.json")


@pytest.mark.parametrize(
    ("change", "message", "path"),
    [
        (
            {"trainer": {"lr": 0.05, "momentum": 0.9}},
            "unknown trainer option",
            "dac.trainer.momentum",
        ),
        ({"trainer": {"lr": -1.0}}, "`lr > 0` must hold", "dac.trainer.lr"),
        (
            {"policy": {"features": ["accuracy"]}},
            "policy features are among",
            "dac.policy.features",
        ),
        ({"instances": {"seed": [0, 1], "noise": [1.0]}}, "equally long", "dac.instances"),
        ({"instances": [{"width": 3}]}, "not a setting", "dac.instances.0.width"),
    ],
)
def test_spec_errors_name_the_field(
    tmp_path: Path, change: dict[str, Any], message: str, path: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        run_dac_spec(_spec(tmp_path, **change))
    assert ".".join(map(str, caught.value.path)) == path
    assert not (tmp_path / "run" / "study.db").exists()  # refused before the study exists


def test_a_search_command_refuses_a_dac_spec(tmp_path: Path) -> None:
    from paretune.spec import load_spec

    with pytest.raises(ConfigError, match="paretune dac"):
        load_spec(_spec(tmp_path))


def test_continuing_with_other_instances_is_refused(tmp_path: Path) -> None:
    run_dac_spec(_spec(tmp_path, held_out=[]))
    with pytest.raises(ConfigError, match="another `instances`") as caught:
        run_dac_spec(_spec(tmp_path, held_out=[], instances={"seed": [5, 6, 7, 8]}, episodes=12))
    assert caught.value.path == ("dac", "instances")


def test_a_second_live_driver_is_refused(tmp_path: Path) -> None:
    config = StudyConfig(
        name="claimed", storage_url=f"sqlite:///{tmp_path}/s.db", metrics=(Metric("x", "minimize"),)
    )
    store = TrialsStore(config, mlflow=False)
    # Another live process of this machine claims the study: a child that waits on its stdin.
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        store.study.set_user_attr(DRIVER_ATTR, owner_token(child.pid))
        with pytest.raises(StudyError, match="another live process"):
            claim_driver(store)
    finally:
        child.communicate(b"")
    claim_driver(store)  # once it has exited, the study is this process's
    assert store.study.user_attrs[DRIVER_ATTR] == owner_token()


@pytest.mark.parametrize(
    ("policy", "verdict"),
    [
        ([1.0, 1.1, 0.9, 1.0], "the policy is better"),
        ([3.0, 3.1, 2.9, 3.0], "the policy is worse"),
        ([1.0, 3.0, 1.5, 2.5], "no difference shown at 95 %"),
    ],
)
def test_the_paired_summary_says_which_way_the_interval_lies(
    policy: list[float], verdict: str
) -> None:
    evaluation = [{"policy": p, "static": 2.0} for p in policy]
    assert verdict in paired_summary(evaluation, Metric("loss", "minimize"))
    flipped = "the policy is worse" if "better" in verdict else verdict
    if "worse" in verdict:
        flipped = "the policy is better"
    assert flipped in paired_summary(evaluation, Metric("loss", "maximize"))
