"""Two drivers that open a new study at the same instant make one MLflow parent run.

Each repetition releases two driver processes together (a barrier) on a study neither has
seen; both open it, start it and report the parent run they log under. The compare-and-set in
the study storage must leave one parent run, which both use, every time: on SQLite and on a
PostgreSQL server.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from paretune.objectives import Metric
from paretune.trials_store import StudyConfig, TrialsStore

REPETITIONS = 20


def _driver(barrier: Any, results: Any, storage_url: str, tracking_uri: str, run_dir: str) -> None:
    for i in range(REPETITIONS):
        config = StudyConfig(
            name=f"race{i}",
            storage_url=storage_url,
            tracking_uri=tracking_uri,
            run_dir=Path(run_dir),
            metrics=(Metric("loss", "minimize"),),
        )
        barrier.wait(timeout=120)
        try:
            store = TrialsStore(config)
            store.start()
            results.put((i, store.parent_run_id))
            store.close()
        except Exception as err:  # reported to the test, which fails on it
            results.put((i, f"error: {err!r}"))


def _race(storage_url: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    args = (barrier, results, storage_url, tracking_uri, str(tmp_path))
    drivers = [context.Process(target=_driver, args=args) for _ in range(2)]
    for p in drivers:
        p.start()
    try:
        seen: dict[int, list[str]] = {}
        for _ in range(2 * REPETITIONS):
            i, run_id = results.get(timeout=300)
            seen.setdefault(i, []).append(run_id)
    finally:
        for p in drivers:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    client = MlflowClient(tracking_uri)
    for i in range(REPETITIONS):
        assert not any(r.startswith("error") for r in seen[i]), seen[i]
        assert len(set(seen[i])) == 1, f"repetition {i}: the drivers used {seen[i]}"
        experiment = client.get_experiment_by_name(f"race{i}")
        parents = client.search_runs([experiment.experiment_id], "tags.`paretune.role` = 'study'")
        assert [r.info.run_id for r in parents] == seen[i][:1], f"repetition {i}"


@pytest.mark.slow
def test_two_drivers_opening_a_new_sqlite_study_at_once_make_one_parent_run(
    tmp_path: Path,
) -> None:
    _race(f"sqlite:///{tmp_path / 'study.db'}", tmp_path)


@pytest.mark.slow
def test_two_drivers_opening_a_new_postgresql_study_at_once_make_one_parent_run(
    tmp_path: Path, postgres_url: str
) -> None:
    _race(postgres_url, tmp_path)
