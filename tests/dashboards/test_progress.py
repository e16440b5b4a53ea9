from __future__ import annotations

import io

from paretune.dashboards import ProgressBar
from paretune.objectives import Metric
from tests.dashboards.conftest import F0_MIN_ACC_MAX, trial


def _last_frame(out: io.StringIO) -> str:
    return out.getvalue().split("\r")[-1]


def test_multi_objective_bar_counts_trials_and_shows_the_front_size() -> None:
    out = io.StringIO()
    bar = ProgressBar(total=10, initial=3, metrics=F0_MIN_ACC_MAX, front=[], file=out)
    assert "3/10" in _last_frame(out)
    front = [trial(0, [0.5, 0.9], {}), trial(1, [0.2, 0.7], {})]
    bar.update(front)
    bar.close()
    frame = _last_frame(out)
    assert "4/10" in frame and "pareto=2" in frame and "trial" in frame


def test_single_objective_bar_shows_the_best_value() -> None:
    out = io.StringIO()
    bar = ProgressBar(total=None, metrics=[Metric("loss", "minimize")], file=out)
    bar.update([trial(0, [0.0123456], {})])
    bar.update([trial(1, [0.01], {})], n=2)
    bar.close()
    frame = _last_frame(out)
    assert "best loss=0.01" in frame and "3trial" in frame.replace(" ", "")


def test_disabled_bar_writes_nothing() -> None:
    out = io.StringIO()
    bar = ProgressBar(total=5, metrics=F0_MIN_ACC_MAX, enabled=False, file=out)
    bar.update([])
    bar.close()
    assert out.getvalue() == ""
