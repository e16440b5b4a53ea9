"""The report in a real browser: every figure drawn (plotly's render promise resolved, marked
by the report itself), no console errors, for the three kinds of study users bring: the
quickstart (two metrics), a three-metric one (VehicleSafety) and an AutoPEFT search."""

from __future__ import annotations

import yaml

from paretune.cli import main
from tests.browser import chromium_page, screenshot


def run_and_report(tmp_path, spec: dict, *, trials: int) -> tuple:
    spec = {
        "run_dir": str(tmp_path / "run"),
        "controller": {"name": "random", "seed": 0},
        "budget": {"trials": trials},
        "report": {"every": 0},
        **spec,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--no-progress"]) == 0
    out = tmp_path / "report.html"
    assert main(["report", str(path), "-o", str(out)]) == 0
    return out


def rendered_figures(page, path) -> list[str]:
    """Open the report; wait until plotly has drawn every figure; their section ids."""
    page.goto(path.as_uri())
    total = page.locator(".plotly-graph-div").count()
    assert total > 0
    page.wait_for_function(
        f"document.querySelectorAll('[data-paretune-rendered]').length === {total}",
        timeout=120_000,
    )
    # Drawn means plotly built its SVG (or WebGL) layers inside each div.
    for div in page.locator(".plotly-graph-div").all():
        assert div.locator(".main-svg").count() > 0
    return page.eval_on_selector_all("section[id]", "els => els.map(e => e.id)")


def test_quickstart_report_renders_every_figure(tmp_path):
    spec = {  # examples/quickstart.yaml
        "study": "quickstart",
        "objective": {"type": "branin_currin"},
        "controller": {"name": "tpe", "seed": 0},
    }
    out = run_and_report(tmp_path, spec, trials=40)
    with chromium_page() as page:
        sections = rendered_figures(page, out)
        assert sections[:4] == ["pareto", "hypervolume", "parallel", "importance"]
        assert page.errors == []
        assert page.locator("#pareto-table tbody tr").count() >= 1
        screenshot(page, "report.png")


def test_three_metric_report_renders_the_3d_front(tmp_path):
    out = run_and_report(
        tmp_path, {"study": "vehicle", "objective": {"type": "vehicle_safety"}}, trials=20
    )
    with chromium_page() as page:
        sections = rendered_figures(page, out)
        assert "pareto" in sections and "hypervolume" in sections
        assert page.locator("#pareto .gl-container, #pareto canvas").count() > 0  # WebGL 3-D
        assert page.errors == []


def test_autopeft_report_renders_the_layer_map(tmp_path):
    """A real AutoPEFT search (the finetune objective on a tiny BERT and a small synthetic
    sentiment table, as the finetune tests build them)."""
    from tests.objectives.test_finetune import (
        FAST,
        save_tiny_model,
        sentiment_rows,
        write_table,
    )

    model = save_tiny_model(tmp_path / "bert")
    data = write_table(sentiment_rows(200), tmp_path / "sentiment.csv")
    spec = {
        "study": "autopeft",
        "objective": {
            "type": "finetune",
            "settings": {
                "model": str(model),
                "data": str(data),
                "group_column": "group",
                "learning_rate": 1e-2,
                "fidelity": FAST,
                "space": {"modules": ["serial", "parallel", "prefix", "lora"]},
            },
        },
        "enqueue": [
            {
                "label": "lora-r4",
                "params": {
                    "serial_size": 0,
                    "parallel_size": 0,
                    "prefix_length": 0,
                    "lora_rank": 4,
                    "lora_alpha_ratio": 2.0,
                    "lora_targets": "qv",
                    "layer_0": True,
                    "layer_1": True,
                },
            }
        ],
    }
    out = run_and_report(tmp_path, spec, trials=8)
    with chromium_page() as page:
        sections = rendered_figures(page, out)
        assert sections[:2] == ["pareto", "hypervolume"]
        assert "peft" in sections  # the layer x module map of the front
        assert page.locator("#peft .plotly-graph-div").count() >= 1
        assert page.errors == []
        screenshot(page, "report-autopeft.png")
