"""The MLflow UI that ``paretune ui`` starts, read the way a reviewer reads it: in Chromium
(Playwright for Python driving Debian's ``/usr/bin/chromium``), on a real two-objective study.

With ``PARETUNE_SCREENSHOTS=docs`` the test also saves ``docs/mlflow-ui.png`` (the runs table
with f0, f1 and the Pareto tag), the screenshot the README shows.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlencode

import optuna
import pytest

from paretune.dashboards._ui import free_port

from .ui_process import ROOT, UiProcess, study_spec

CHROMIUM = Path("/usr/bin/chromium")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser tests need Playwright for Python"
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"the browser tests drive Debian's Chromium at {CHROMIUM}"
    ),
]

# The grid's rows, as AG Grid pins their left part (the run names); a run-name cell's link is
# the run's name.
ROWS = ".ag-pinned-left-cols-container .ag-row"
NAME = "[col-id='attributes.`Run Name`'] a"
RUN_NAMES = f"{ROWS} {NAME}"
# Seconds the UI has to show its table: its first load compiles a large bundle (20 s here).
LOAD_MS = 180_000
PARETO_FILTER = "tags.`paretune.pareto` = 'true'"


def _mlflow_noise(error: dict[str, str]) -> bool:
    """Console errors of MLflow's own that say nothing about what paretune logged.

    Two are known, both failed loads of MLflow endpoints that serve no run data:

    - MLflow's frontend asks every page for the signed-in user
      (``/ajax-api/2.0/mlflow/users/current``), an endpoint that only MLflow's basic-auth app
      serves; the plain server answers 404 and the UI goes on without a user.
    - MLflow 3.18's chat assistant (``/ajax-api/3.0/mlflow/assistant/...``) probes the server
      host for coding-agent CLIs, Docker and a config under ``~/.mlflow``; on some hosts (the CI
      machine, not this one) it answers 500, and the runs table is unaffected.

    Everything else fails the test.
    """
    if not error["text"].startswith("Failed to load resource"):
        return False
    url = error["url"]
    return url.endswith("/ajax-api/2.0/mlflow/users/current") or (
        "/ajax-api/3.0/mlflow/assistant/" in url
    )


def _names(page: sync_api.Page, count: int) -> set[str]:
    """The run names the table shows, once it shows ``count`` of them."""
    names = page.locator(RUN_NAMES)
    sync_api.expect(names).to_have_count(count, timeout=LOAD_MS)
    return {text.strip() for text in names.all_inner_texts()}


def _pick_columns(page: sync_api.Page, names: list[str]) -> None:
    """Show (or hide) the columns ``names`` of the runs table, one at a time."""
    for name in names:
        page.get_by_role("button", name="Columns", exact=True).click()
        page.get_by_role("dialog").get_by_text(name, exact=True).click()
        page.keyboard.press("Escape")


def _screenshot(page: sync_api.Page, path: Path) -> None:
    """The runs table for a reader: the assistant panel closed, the objectives and the Pareto
    tag shown, the empty columns hidden, the names in full."""
    page.get_by_role("button", name="Close", exact=True).click()  # the MLflow Assistant
    page.get_by_role("button", name="New Chat").wait_for(state="hidden")
    _pick_columns(page, ["f0", "f1", "paretune.pareto", "Dataset", "Source", "Models"])
    sync_api.expect(page.locator(".ag-header-cell", has_text="paretune.pareto")).to_be_visible()
    resize = ".ag-header-cell[col-id='attributes.`Run Name`'] .ag-header-cell-resize"
    page.locator(resize).dblclick()  # AG Grid fits the column to the longest name
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))


def test_the_mlflow_ui_lists_the_experiment_the_parent_every_trial_and_the_pareto_runs(
    tmp_path: Path,
) -> None:
    study = "ui-browser"
    spec = study_spec(tmp_path, trials=8, study=study)
    trials = optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path}/run/study.db")
    named = {
        t.number: f"t{t.number:03d} x0={t.params['x0']:.3g} x1={t.params['x1']:.3g}"
        for t in trials.trials
    }
    pareto = {named[t.number] for t in trials.best_trials}
    assert 0 < len(pareto) < len(named)  # the filter has something to leave out

    ui = UiProcess(spec, "--port", str(free_port()))
    errors: list[dict[str, str]] = []
    try:
        url, _, pages = ui.served()
        experiment_id = re.search(r"#/experiments/(\d+)/", pages["experiment"])[1]
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM),
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page(viewport={"width": 1600, "height": 900})

            def console(message: sync_api.ConsoleMessage) -> None:
                if message.type == "error":
                    errors.append({"text": message.text, "url": message.location.get("url", "")})

            page.on("console", console)
            page.on("pageerror", lambda e: errors.append({"text": str(e), "url": ""}))

            # The experiment, its parent run, and one child per trial (children are shown
            # collapsed under their parent: expanded with the parent's toggle).
            page.goto(pages["experiment"])
            parent = page.locator(ROWS).filter(
                has=page.locator(NAME, has_text=re.compile(rf"^{study}$"))
            )
            sync_api.expect(parent).to_have_count(1, timeout=LOAD_MS)
            experiment = page.locator(f"a[href='#/experiments/{experiment_id}']")
            sync_api.expect(experiment.first).to_have_text(study)
            parent.get_by_role("button").first.click()
            assert _names(page, len(named) + 1) == {study, *named.values()}
            screenshots = os.environ.get("PARETUNE_SCREENSHOTS")
            if screenshots:
                _screenshot(page, (ROOT / screenshots / "mlflow-ui.png").resolve())

            # MLflow's search for the Pareto tag: exactly the Pareto trials, under the parent.
            page.goto(f"{pages['experiment']}&{urlencode({'searchFilter': PARETO_FILTER})}")
            sync_api.expect(page.get_by_placeholder(re.compile("metrics"))).to_have_value(
                PARETO_FILTER, timeout=LOAD_MS
            )
            assert _names(page, len(pareto) + 1) == {study, *pareto}
            browser.close()
        assert ui.stop() == 0
    finally:
        if ui.proc.poll() is None:
            ui.kill()
    ours = [e for e in errors if not _mlflow_noise(e)]
    assert not ours, f"console errors in the MLflow UI: {ours}"
    assert url.startswith("http://127.0.0.1:")
