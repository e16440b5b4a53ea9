"""The held-out table of a DAC run: the policy against the parameter held, paired."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from paretune.dashboards._text import format_table

if TYPE_CHECKING:
    from paretune.objectives import Metric

__all__ = ["paired_summary"]


def paired_summary(evaluation: Sequence[Mapping[str, float]], metric: Metric) -> str:
    """A table of each held-out instance's metric under the policy and held static, and the
    mean paired difference (policy minus static) with its 95 % t interval.

    Args:
        evaluation: ``{"policy": value, "static": value}`` per instance (either may be
            missing).
        metric: The rewarded metric (its direction says which sign is better).
    """
    from scipy import stats

    rows = []
    diffs = []
    for i, e in enumerate(evaluation):
        p, s = e.get("policy", math.nan), e.get("static", math.nan)
        d = p - s
        rows.append([i, p, s, d])
        if math.isfinite(d):
            diffs.append(d)
    lines = [format_table(["held-out", f"policy {metric.name}", "static", "difference"], rows)]
    if len(diffs) >= 2:
        mean = sum(diffs) / len(diffs)
        sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / (len(diffs) - 1))
        half = float(stats.t.ppf(0.975, len(diffs) - 1)) * sd / math.sqrt(len(diffs))
        low, high = mean - half, mean + half
        better = high < 0 if metric.direction == "minimize" else low > 0
        worse = low > 0 if metric.direction == "minimize" else high < 0
        verdict = (
            "the policy is better"
            if better
            else "the policy is worse"
            if worse
            else "no difference shown at 95 %"
        )
        lines.append(
            f"paired difference (policy - static) over {len(diffs)} instances: {mean:+.4g} "
            f"[{mean - half:+.4g}, {mean + half:+.4g}] (95 % t): {verdict}"
        )
    return "\n".join(lines)
