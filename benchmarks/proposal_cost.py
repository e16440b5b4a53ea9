"""The cost of one BoTorchSampler proposal on a study that already holds ``n`` trials.

A 500-trial run of ``mobo.py --timing-growth`` costs 20-30 minutes of one core; this measures
the same quantity, the seconds of ``study.ask()`` + ``space.suggest(trial)``, at chosen study
sizes in a fraction of that. The study is filled with ``n`` trials of Optuna's multivariate
TPE (seeded; they crowd around the Pareto front as a model-based search's trials do, which is
what makes the acquisition's baseline large), then paretune's sampler makes one proposal that
is not counted (a process's first loads BoTorch's fused kernel) and ``--proposals`` more in a
row, each told before the next. Both the wall-clock and the process CPU
seconds are recorded: on a shared machine the CPU seconds are the ones that say what a
proposal costs on an idle core (the sampler proposes on one torch thread).

Usage::

    python benchmarks/proposal_cost.py --sizes 100,200,500 --proposals 5
    python benchmarks/proposal_cost.py --sizes 500 --sampler-kwargs '{"max_fit_points": null}'
    python benchmarks/proposal_cost.py --table-only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _harness as harness  # benchmarks/ is on sys.path when run as a script
import mobo
import numpy as np

DEFAULT_CACHE = harness.RESULTS_DIR / "proposal_cost.jsonl"


def measure(problem_name: str, n: int, proposals: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Fill a study with ``n`` TPE trials and time ``proposals`` paretune proposals."""
    import optuna
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    problem = mobo.make_problem(problem_name)
    names = [m.name for m in problem.metrics]
    study = optuna.create_study(
        directions=[m.direction for m in problem.metrics],
        sampler=optuna.samplers.TPESampler(seed=0, multivariate=True),
    )

    def step() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        trial = study.ask()
        params = problem.space.suggest(trial)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        result = problem.evaluate(params)
        study.tell(trial, [float(result[k]) for k in names])
        return wall, cpu

    for _ in range(n):
        step()
    study.sampler = mobo.make_sampler("paretune", problem, 0, kwargs)
    step()  # not counted: the first multi-objective proposal of a process loads BoTorch's kernel
    load_start = os.getloadavg()[0]
    times = [step() for _ in range(proposals)]
    return {
        "problem": problem_name,
        "n_trials": n,
        "proposals": proposals,
        "kwargs": kwargs,
        "wall_s": [w for w, _ in times],
        "cpu_s": [c for _, c in times],
        "loadavg": [load_start, os.getloadavg()[0]],
        **harness.stamp(),
        "machine": harness.machine(),
        "versions": mobo.versions(),
    }


def table(records: Sequence[dict[str, Any]]) -> list[str]:
    rows = []
    for r in sorted(records, key=lambda r: (r["problem"], json.dumps(r["kwargs"]), r["n_trials"])):
        rows.append(
            [
                r["problem"],
                json.dumps(r["kwargs"]) if r["kwargs"] else "defaults",
                str(r["n_trials"]),
                str(r["proposals"]),
                f"{np.median(r['cpu_s']):.2f}",
                f"{np.median(r['wall_s']):.2f}",
                " - ".join(f"{x:.1f}" for x in r["loadavg"]),
                r["versions"].get("paretune_source") or "-",
            ]
        )
    header = ["problem", "paretune options", "trials in the study", "proposals",
              "median CPU s", "median wall s", "1-min load", "paretune source"]  # fmt: skip
    return harness.markdown_table(header, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--problems", default="BraninCurrin,DTLZ2")
    parser.add_argument("--sizes", type=harness.parse_ints, default=[100, 200, 500])
    parser.add_argument("--proposals", type=int, default=5)
    parser.add_argument("--sampler-kwargs", default="{}", help="paretune's options, JSON")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    kwargs = json.loads(args.sampler_kwargs)
    if not args.table_only:
        for problem in args.problems.split(","):
            for n in args.sizes:
                record = measure(problem, n, args.proposals, kwargs)
                harness.append_record(args.cache, record)
                print(
                    f"{problem} n={n} {kwargs or 'defaults'}: median CPU "
                    f"{np.median(record['cpu_s']):.2f} s, wall {np.median(record['wall_s']):.2f} s",
                    flush=True,
                )
    print("\n".join(table(harness.read_records(args.cache))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
