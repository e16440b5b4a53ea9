"""The HTML report: what goes in, a family defined outside paretune, a broken family, the
``paretune report`` command, and the refresh during a search (file and MLflow artifact)."""

from __future__ import annotations

import json
import re
import textwrap

import pytest
import yaml
from plotly.offline import get_plotlyjs

from paretune.cli import main
from paretune.dashboards import (
    FigureFamily,
    StudyData,
    build_report,
    register_figure,
    registered_figures,
    unregister_figure,
    write_report,
)
from paretune.objectives import Metric
from tests.conftest import xy_spec
from tests.dashboards.test_figures import MIN_MIN, frozen


class TrialSeconds(FigureFamily):
    """A family written outside the package, registered through the public API."""

    name = "test-seconds"
    title = "Seconds per trial (test)"
    order = 90

    def extract(self, study):
        return [t.number for t in study.complete]

    def draw(self, data):
        import plotly.graph_objects as go

        return go.Figure(go.Bar(x=data, y=[1.0] * len(data), name="seconds"))


class Broken(FigureFamily):
    name = "test-broken"
    title = "Broken (test)"

    def extract(self, study):
        raise RuntimeError("no data for this")

    def draw(self, data):
        raise AssertionError("not reached")


@pytest.fixture
def extra_families():
    register_figure(TrialSeconds)
    register_figure(Broken)
    yield
    unregister_figure("test-seconds")
    unregister_figure("test-broken")


def two_metric_study() -> StudyData:
    front = [frozen(i, [x, 1.0 - x], {"x": x}) for i, x in enumerate([0.1, 0.5, 0.9, 0.3])]
    trials = (*front, frozen(4, [0.9, 0.9], {"x": 0.2}))
    return StudyData(name="two", metrics=MIN_MIN, trials=trials)


def test_report_has_each_applicable_family_once_and_plotly_once(extra_families):
    report = build_report(two_metric_study())
    drawn = [s.name for s in report.sections]
    assert drawn[:4] == ["pareto", "hypervolume", "parallel", "importance"]
    assert "test-seconds" in drawn  # the outside family is in the report
    assert report.html.count(get_plotlyjs()) == 1  # plotly.js inlined once: offline
    assert "<script src=" not in report.html.replace(get_plotlyjs(), "")
    for div in report.figure_ids:
        assert f'id="{div}"' in report.html
    # The broken family is reported in its section; the others are drawn.
    assert [s.name for s in report.failed] == ["test-broken"]
    assert "RuntimeError: no data for this" in report.html
    # The Pareto table lists the front, not the dominated trial 4.
    table = report.html.split('id="pareto-table"')[1]
    assert re.findall(r'<td class="num">(\d+)</td>', table) == ["0", "3", "1", "2"]


def test_report_of_one_metric_leaves_out_the_front_figures():
    study = StudyData(
        name="one",
        metrics=(Metric("loss", "minimize"),),
        trials=tuple(frozen(i, [float(i)], {"x": i / 10}) for i in range(5)),
    )
    report = build_report(study, figures=["pareto", "hypervolume", "parallel"])
    assert [s.name for s in report.sections] == ["parallel"]


def test_write_report_replaces_the_file_whole(tmp_path):
    path = tmp_path / "deep" / "report.html"
    write_report(two_metric_study(), path, figures=["pareto"])
    first = path.read_text()
    write_report(two_metric_study(), path, figures=["pareto", "hypervolume"])
    assert path.read_text() != first and path.read_text().rstrip().endswith("</html>")
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temporary left


def test_unknown_family_is_rejected_before_any_work():
    from paretune import ConfigError

    with pytest.raises(ConfigError, match="unknown figure family 'nope'"):
        build_report(two_metric_study(), figures=["pareto", "nope"])
    assert "nope" not in registered_figures()


RECORDING_OBJECTIVE = '''
import json, pathlib, re

def objective(params, ctx):
    """Records what the run's report says when each trial starts."""
    report = pathlib.Path(ctx.settings["report"])
    seen = None
    if report.exists():
        seen = int(re.search(r'<p class="meta">(\\d+) trials', report.read_text()).group(1))
    with open(ctx.settings["log"], "a") as f:
        f.write(json.dumps({"trial": ctx.trial_number, "report_trials": seen}) + "\\n")
    return {"f0": (params["x"] - 0.3) ** 2, "f1": (params["x"] - 0.7) ** 2 + params["y"]}
'''


def test_search_refreshes_its_report_every_n_trials_and_logs_it(tmp_path):
    src = tmp_path / "recording.py"
    src.write_text(textwrap.dedent(RECORDING_OBJECTIVE))
    log = tmp_path / "seen.jsonl"
    spec = xy_spec(
        tmp_path,
        f"{src}:objective",
        study="refresh",
        trials=7,
        report=str(tmp_path / "run" / "report.html"),
        log=str(log),
    )
    spec["report"] = {"every": 2, "min_interval": 0}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--no-progress"]) == 0
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    # Trial n starts after n trials finished; the report is rewritten after 2, 4 and 6.
    assert [s["report_trials"] for s in sorted(seen, key=lambda s: s["trial"])] == [
        None,
        None,
        2,
        2,
        4,
        4,
        6,
    ]
    html = (tmp_path / "run" / "report.html").read_text()
    assert '<p class="meta">7 trials' in html  # and at the end

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("refresh")
    parent = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`paretune.role` = 'study'"
    )[0]
    assert "report.html" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    logged = client.download_artifacts(parent.info.run_id, "report.html", str(tmp_path / "dl"))
    with open(logged, encoding="utf-8") as f:
        assert '<p class="meta">7 trials' in f.read()


def test_report_command_writes_the_file_and_names_what_it_drew(tmp_path, capsys):
    spec = {
        "study": "vs",
        "run_dir": str(tmp_path / "run"),
        "objective": {"type": "vehicle_safety"},
        "controller": {"name": "random", "seed": 0},
        "budget": {"trials": 12},
        "report": {"every": 0},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--no-progress"]) == 0
    out = tmp_path / "elsewhere.html"
    capsys.readouterr()
    assert main(["report", str(path), "-o", str(out), "--no-mlflow"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"pareto\s+1 figure\(s\)", printed)
    assert f"wrote {out}" in printed
    text = out.read_text()
    assert '"type":"scatter3d"' in text.replace(" ", "")  # three metrics: the 3-D front
    assert main(["report", str(path), "--figures", "pareto,nope"]) == 2
    assert "unknown figure family 'nope'" in capsys.readouterr().err


SEEDED_OBJECTIVE = """
def objective(params, ctx):
    noise = 0.01 * ctx.seed
    return {"f0": params["x"] + noise, "f1": 1.0 - params["x"] + params["y"] + noise}
"""


def test_reevaluations_are_read_from_their_study_and_drawn_as_error_bars(tmp_path):
    from paretune.spec import load_spec
    from paretune.trials_store import TrialsStore

    src = tmp_path / "seeded.py"
    src.write_text(textwrap.dedent(SEEDED_OBJECTIVE))
    path = tmp_path / "spec.yaml"
    spec = xy_spec(tmp_path, f"{src}:objective", study="seeded", trials=5)
    spec["report"] = {"every": 0}
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--no-progress"]) == 0
    assert main(["reevaluate", str(path), "--trials", "1,3", "--seeds", "3"]) == 0

    loaded = load_spec(str(path), resolve=False)
    store = TrialsStore(loaded.study_config(read_only=True), create=False, mlflow=False)
    data = StudyData.from_store(store)
    assert sorted(data.reevaluations) == [1, 3]
    assert sorted(data.reevaluations[1]) == [0, 1, 2]
    x = data.trials[1].params["x"]
    assert [data.reevaluations[1][s]["f0"] for s in (0, 1, 2)] == pytest.approx(
        [x, x + 0.01, x + 0.02]
    )
    report = build_report(data, figures=["pareto"])
    assert "re-evaluated (mean ± sd)" in report.html
    table = report.html.split('id="pareto-table"')[1]
    rows = {
        int(m.group(1)): m.group(0)
        for m in re.finditer(r'<tr><td class="num">(\d+)</td>.*?</tr>', table)
    }
    assert set(rows) == {t.number for t in data.pareto}
    for number, row in rows.items():  # the re-evaluated column: mean ± sd over the 3 seeds
        assert ("(3 seeds)" in row) == (number in (1, 3))
