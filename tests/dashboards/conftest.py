"""Trials and re-evaluations built by hand: what the tables are given."""

from __future__ import annotations

import re
from typing import Any

import optuna

from paretune.objectives import Metric
from paretune.search import Reevaluation

F0_MIN_ACC_MAX = (Metric("f0", "minimize"), Metric("accuracy", "maximize"))


def trial(
    number: int, values: list[float], params: dict[str, Any], **user_attrs: Any
) -> optuna.trial.FrozenTrial:
    dists: dict[str, optuna.distributions.BaseDistribution] = {}
    for k, v in params.items():
        if isinstance(v, str):
            dists[k] = optuna.distributions.CategoricalDistribution([v])
        elif isinstance(v, int):
            dists[k] = optuna.distributions.IntDistribution(0, 1000)
        else:
            dists[k] = optuna.distributions.FloatDistribution(-1e6, 1e6)
    t = optuna.trial.create_trial(
        params=params, distributions=dists, values=values, user_attrs=user_attrs
    )
    t.number = number
    return t


def reevaluation(
    number: int,
    runs: dict[int, dict[str, float]],
    *,
    values: list[float] | None = None,
    params: dict[str, Any] | None = None,
    label: str | None = None,
    baseline: bool = False,
) -> Reevaluation:
    source = trial(number, values or [0.0, 0.0], params or {"x": 0.5})
    return Reevaluation(source, label, baseline, runs=runs)


def read_table(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """The titles and the rows of a plain-text table, read by the column spans of its rule."""
    lines = text.splitlines()
    spans = [m.span() for m in re.finditer(r"-+", lines[1])]
    titles = [lines[0][a:b].strip() for a, b in spans]
    rows = [
        {t: line[a:b].strip() for t, (a, b) in zip(titles, spans, strict=True)}
        for line in lines[2:]
    ]
    return titles, rows
