"""`import paretune` and the CLI's start stay light: heavy libraries load where they are used."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "botorch", "ray", "mlflow", "transformers", "peft", "gymnasium")


@pytest.mark.parametrize(
    "module",
    ["paretune", "paretune.cli", "paretune.spec", "paretune.spaces",
     "paretune.spaces._schedule_settings", "paretune.objectives",
     "paretune.search", "paretune.search.dac", "paretune.trials_store", "paretune.dashboards",
     "paretune.testing"],
)  # fmt: skip
def test_import_does_not_load_heavy_libraries(module):
    code = f"import sys, {module}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} imported {out.stdout.strip()}"
