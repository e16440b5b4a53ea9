"""docs/extending.md works as written: its plugin registers an objective type, a controller, a
runner and a figure family through the public API, and its spec runs them with the CLI (and
draws the figure in the report).

The page's ``python`` blocks, in order, are ``plugin.py``; its ``yaml`` block is the spec.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from paretune.testing import ControllerConformance

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def blocks(language: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.M | re.S)


def plugin_source() -> str:
    return "\n\n".join(blocks("python"))


@pytest.fixture(scope="module")
def plugin() -> Iterator[types.ModuleType]:
    """The page's plugin, imported in this process (its registrations included)."""
    module = types.ModuleType("extending_doc_plugin")
    module.__file__ = str(DOC)
    sys.modules[module.__name__] = module  # pydantic resolves the settings' annotations here
    exec(compile(plugin_source(), str(DOC), "exec"), module.__dict__)
    yield module
    del sys.modules[module.__name__]  # (its registrations stay: registries have no removal)


def test_the_page_has_one_plugin_and_one_spec() -> None:
    # objective, dynamic objective, controller, runner, figure family
    assert len(blocks("python")) == 5
    assert len(blocks("yaml")) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("runner", "budget"),
    [(None, 20), ("{type: local, n_jobs: 2}", 10)],
    ids=["the-plugins-runner", "worker-processes"],
)
def test_the_spec_runs_the_plugin_with_the_cli(
    tmp_path: Path, runner: str | None, budget: int
) -> None:
    (tmp_path / "plugin.py").write_text(plugin_source(), encoding="utf-8")
    (tmp_path / "spec.yaml").write_text(blocks("yaml")[0], encoding="utf-8")
    step = 0.01  # small steps: proposals near earlier trials tell the controller from chance
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Worker processes import the plugin too (its objective type is rebuilt there).
    overrides = [] if runner is None else ["--set", f"runner={runner}"]
    command = ["paretune", "run", "spec.yaml", "--set", f"controller.options.step={step}"]
    done = subprocess.run(
        [*command, "--set", f"budget.trials={budget}", *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    if runner is None:
        assert "plugin: trials in 2 threads" in done.stderr  # the plugin's runner ran them

    study = optuna.load_study(
        study_name="extending", storage=f"sqlite:///{tmp_path / 'runs/extending/study.db'}"
    )
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * budget
    for t in trials:  # the objective's own space and metric
        assert set(t.params) == {"x0", "x1"}
        x0, x1 = t.params["x0"], t.params["x1"]
        assert -2 <= x0 <= 2 and -2 <= x1 <= 2
        expected = math.log1p(100 * (x1 - x0 * x0) ** 2 + (1 - x0) ** 2)
        assert t.values == pytest.approx([expected])
    # The plugin's controller: past its 5 start-up trials every proposal lies within 5 steps
    # (0.2 of the range 4) of an earlier trial; uniform draws would not (p < 1e-9).
    for t in trials[7:]:  # two threads: trials 5 and 6 may be asked before 5 complete
        near = [
            max(abs(t.params[k] - s.params[k]) for k in ("x0", "x1")) <= 5 * step * 4
            for s in trials[: t.number]
        ]
        assert any(near), t.params

    status = subprocess.run(
        ["paretune", "status", "spec.yaml", "--set", f"budget.trials={budget}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    assert f"study 'extending': {budget} / {budget} trials finished" in status.stdout

    # The plugin's figure family is drawn in the report, beside paretune's own.
    report = subprocess.run(
        ["paretune", "report", "spec.yaml", "-o", "report.html", "--no-mlflow"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert report.returncode == 0, report.stderr
    assert re.search(r"seconds\s+1 figure", report.stdout)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert '<section id="seconds"><h2>Seconds per trial</h2>' in html


@pytest.mark.slow
def test_paretune_dac_trains_a_policy_for_the_plugins_dynamic_parameter(tmp_path: Path) -> None:
    (tmp_path / "plugin.py").write_text(plugin_source(), encoding="utf-8")
    spec = re.search(r"^```\n(study: valley.*?)^```$", DOC.read_text(), flags=re.M | re.S)
    assert spec is not None
    (tmp_path / "dac.yaml").write_text(spec.group(1), encoding="utf-8")
    done = subprocess.run(
        ["paretune", "dac", "dac.yaml", "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "paired difference (policy - static) over 2 instances" in done.stdout
    study = optuna.load_study(
        study_name="valley", storage=f"sqlite:///{tmp_path / 'runs/valley/study.db'}"
    )
    training = [t for t in study.trials if "paretune.label" not in t.user_attrs]
    assert len(training) == 8
    for t in training:  # 200 steps, a decision every 10, each within the bounds
        values = [d["value"] for d in t.user_attrs["paretune.trajectory"]]
        assert len(values) == 20 and all(1e-5 <= v <= 2e-3 for v in values)
    assert (tmp_path / "runs/valley/policy.json").is_file()


def test_a_spec_the_plugin_runner_cannot_run_is_rejected_at_load(
    plugin: types.ModuleType, tmp_path: Path
) -> None:
    import yaml

    from paretune import ConfigError
    from paretune.spec import load_spec

    data: dict[str, Any] = yaml.safe_load(blocks("yaml")[0])
    data["plugins"] = []  # already imported
    data["run_dir"] = str(tmp_path)
    data["budget"]["trial_timeout"] = 10
    with pytest.raises(ConfigError) as info:
        load_spec(data)
    assert info.value.path == ("budget", "trial_timeout")
    assert "thread cannot be stopped" in str(info.value)


@pytest.mark.usefixtures("plugin")
class TestThePagesController(ControllerConformance):
    @pytest.fixture
    def controller(self) -> str:
        return "hill_climb"

    @pytest.fixture
    def controller_options(self) -> dict[str, Any]:
        return {"n_startup_trials": 3}
