"""run_dac end to end on noisy_quadratic: the study, the policy, MLflow, resume, Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from paretune.objectives import NoisyQuadratic
from paretune.search import LocalRunnerSettings, ObjectiveRef, RunnerSettings
from paretune.search.dac import DAC_ATTR, DACPlan, DACResult, dac_space, load_policy, run_dac
from paretune.trials_store import StudyConfig
from tests.test_cli import _mlflow_runs

SETTINGS: dict[str, Any] = {
    "steps": 60,
    "dim": 8,
    "dynamic": {"actions": [0.5, 1.0, 2.0], "low": 0.01, "high": 1.6, "interval": 10},
}
TRAIN = tuple({"seed": s} for s in range(4))
HELD_OUT = tuple({"seed": s} for s in range(100, 103))


def _plan(tmp_path: Path, episodes: int, runner: RunnerSettings | None = None) -> DACPlan:
    objective = NoisyQuadratic(**SETTINGS)
    assert objective.dynamic is not None
    return DACPlan(
        study=StudyConfig(
            name="dac",
            storage_url=f"sqlite:///{tmp_path}/study.db",
            tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
            run_dir=tmp_path,
            metrics=objective.metrics,
            space=dac_space(episodes, len(TRAIN), len(HELD_OUT)),
        ),
        objective=ObjectiveRef(type="noisy_quadratic", settings=SETTINGS),
        param=objective.dynamic,
        instances=TRAIN,
        held_out=HELD_OUT,
        episodes=episodes,
        batch=4,
        algorithm="ppo",
        trainer={"lr": 0.05},
        policy={"features": ["progress", "log2_value"], "hidden": 0},
        runner=runner or LocalRunnerSettings(n_jobs=1, device="cpu"),
        policy_path=tmp_path / "policy.json",
    )


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="dac", storage=f"sqlite:///{tmp_path}/study.db")


def _training(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if not t.user_attrs.get("paretune.label")]


def _check_trajectories(study: optuna.Study, episodes: int) -> None:
    training = _training(study)
    assert len(training) == episodes
    assert all(t.state == TrialState.COMPLETE for t in training)
    for t in training:
        trajectory = t.user_attrs["paretune.trajectory"]
        assert [d["state"]["step"] for d in trajectory] == [0, 10, 20, 30, 40, 50]
        assert all(d["action"] in (0, 1, 2) and d["log_prob"] <= 0 for d in trajectory)
        reward = -t.user_attrs["paretune.metrics"]["log10_loss"]
        assert [d["reward"] for d in trajectory] == [0.0] * 5 + [pytest.approx(reward)]


def test_run_dac_trains_saves_and_evaluates_a_policy(tmp_path: Path) -> None:
    result = run_dac(_plan(tmp_path, 16))
    assert not result.interrupted
    study = _study(tmp_path)
    assert len(study.trials) == 16 + 2 * len(HELD_OUT)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    _check_trajectories(study, 16)
    episodes = sorted(t.params["episode"] for t in _training(study))
    assert episodes == list(range(16))
    assert [t.params["instance"] for t in sorted(_training(study), key=lambda t: t.number)] == [
        i % len(TRAIN) for i in range(16)
    ]

    # Four updates; the policy file, the study and the result hold the same policy.
    assert len(result.updates) == 4 and result.policy.updates == 4
    attr = study.user_attrs[DAC_ATTR]
    assert len(attr["updates"]) == 4 and len(attr["consumed"]) == 16
    saved = json.loads((tmp_path / "policy.json").read_text())
    assert saved == attr["policy"] == json.loads(json.dumps(result.policy.snapshot().to_dict()))
    assert load_policy(tmp_path / "policy.json").updates == 4

    # The held-out instances: greedy policy (its decisions recorded) and static (held).
    labelled = {
        str(t.user_attrs["paretune.label"]): t
        for t in study.trials
        if t.user_attrs.get("paretune.label")
    }
    assert sorted(labelled) == sorted(
        [f"eval {i}" for i in range(3)] + [f"static {i}" for i in range(3)]
    )
    for i in range(3):
        static = labelled[f"static {i}"].user_attrs.get("paretune.trajectory") or []
        assert all(d["action"] is None for d in static)
        assert all(d["value"] == d["state"]["value"] for d in static)
        assert labelled[f"eval {i}"].user_attrs["paretune.trajectory"]
    assert len(result.evaluation) == 3
    assert all(set(e) == {"policy", "static"} for e in result.evaluation)

    # MLflow: every training episode's child run has its trajectory; the parent the policy.
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    parents, children = _mlflow_runs(f"sqlite:///{tmp_path}/mlflow.db", "dac")
    assert len(parents) == 1 and len(children) == len(study.trials)
    by_trial = {int(c.data.tags["paretune.trial"]): c for c in children}
    for t in _training(study):
        run_id = by_trial[t.number].info.run_id
        artifacts = {a.path for a in client.list_artifacts(run_id)}
        assert "trajectory.json" in artifacts
        history = client.get_metric_history(run_id, "dac.value")
        assert sorted(m.step for m in history) == [0, 10, 20, 30, 40, 50]
        logged = json.loads(
            Path(client.download_artifacts(run_id, "trajectory.json", str(tmp_path))).read_text()
        )
        assert logged == t.user_attrs["paretune.trajectory"]
    parent = parents[0].info.run_id
    assert [a.path for a in client.list_artifacts(parent, "policy")] == ["policy/policy.json"]
    assert len(client.get_metric_history(parent, "dac.reward")) == 4


def test_a_resumed_run_continues_the_episodes_and_the_updates(tmp_path: Path) -> None:
    first = run_dac(_plan(tmp_path, 8))
    assert len(first.updates) == 2
    second = run_dac(_plan(tmp_path, 16), resume=True)
    study = _study(tmp_path)
    training = _training(study)
    _check_trajectories(study, 16)
    episodes = [t.params["episode"] for t in training]
    assert sorted(episodes) == list(range(16))  # none repeated
    assert len(second.updates) == 4 and second.policy.updates == 4
    attr = study.user_attrs[DAC_ATTR]
    assert len(attr["updates"]) == 4 and sorted(attr["consumed"]) == sorted(
        t.number for t in training
    )
    assert load_policy(tmp_path / "policy.json").updates == 4


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_run_dac_on_ray_records_the_trajectories(tmp_path: Path) -> None:
    pytest.importorskip("ray.tune")
    import ray

    from paretune.search import RayRunnerSettings

    try:
        result = run_dac(_plan(tmp_path, 8, RayRunnerSettings(type="ray", num_cpus=2)))
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert isinstance(result, DACResult) and not result.interrupted
    study = _study(tmp_path)
    _check_trajectories(study, 8)
    assert len(result.updates) == 2
    assert len(study.trials) == 8 + 2 * len(HELD_OUT)
    assert sorted(t.params["episode"] for t in study.trials)[:8] == list(range(8))
    # Each episode ran with the policy as it was when it started: the first batch with the
    # fresh policy, the second with the policy after one update.
    snapshots = [t.user_attrs["paretune.trajectory"][0]["log_prob"] for t in study.trials[:8]]
    assert all(p is not None for p in snapshots)
