"""``paretune coord-check`` at its defaults: muP passes, standard parametrization fails on the
logits (and more), from width 64 to 1024 on the real corpus."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from paretune.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lm_lr.yaml"

needs_corpus = pytest.mark.skipif(
    not (Path(os.environ.get("PARETUNE_DATA_DIR", "/nonexistent")) / "lm_corpus").is_dir(),
    reason="needs $PARETUNE_DATA_DIR with lm_corpus/austen.txt.gz (the workplace's data)",
)


@pytest.mark.slow
@needs_corpus
def test_mup_passes_the_coordinate_check_at_the_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mup.json"
    assert main(["coord-check", str(EXAMPLE), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["ok"] is True
    assert result["widths"] == [64, 128, 256, 512, 1024]
    assert set(result["values"]) == {
        "embedding", "block0.attention", "block0.mlp", "block1.attention", "block1.mlp", "logits",
    }  # fmt: skip
    assert all(abs(s) <= 0.1 for s in result["slopes"].values()), result["slopes"]
    printed = capsys.readouterr().out
    assert "MUP: every module's activation size is width-independent" in printed


@pytest.mark.slow
@needs_corpus
def test_standard_parametrization_fails_naming_the_worst_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sp.json"
    code = main(["coord-check", str(EXAMPLE), "--parametrization", "sp", "--json", str(out)])
    assert code == 1
    result = json.loads(out.read_text())
    assert result["ok"] is False
    assert result["slopes"]["logits"] > 0.3
    worst = max(result["slopes"], key=lambda k: abs(result["slopes"][k]))
    assert f"SP: {worst} drifts with width" in capsys.readouterr().out


def test_a_spec_without_the_lm_objective_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("study: s\nobjective: {type: zdt1}\nbudget: {trials: 1}\n")
    assert main(["coord-check", str(spec)]) == 2
    assert "objective.type" in capsys.readouterr().err
