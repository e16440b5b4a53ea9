"""Plain BoTorch, sequential and with pending points: the anchor for paretune's 4-worker mode.

The question this answers: is the gap between paretune's 4-worker runs and its sequential runs
(``mobo.py --pending 4``) a flaw of paretune's sampler, or what BoTorch's own treatment of
pending points (``X_pending`` in qLogNEHVI: the candidate's improvement is integrated jointly
with the pending points' over the posterior) costs on the same problem? This script does the
BoTorch tutorial's loop with no Optuna and no paretune code in the optimisation, in the same
two modes and on the same seeds as ``mobo.py``:

- ``sequential``: propose, evaluate, refit, one trial at a time;
- ``pendingN``: N trials are always outstanding: propose N, then evaluate the oldest and
  propose a new one with the other N - 1 as ``X_pending``, until the budget is proposed.

Start-up as in paretune (same rule, so the two differ only in the optimisation code): scrambled
Sobol points while fewer than ``max(5, min(2 (d + 1), 10))`` trials are complete or
outstanding, or fewer than 2 are complete. Model: one ``SingleTaskGP`` per objective
(``ModelListGP``), outcomes standardised; acquisition: ``qLogNoisyExpectedHypervolumeImprovement``
at the problem's reference point; ``optimize_acqf`` with the tutorial's settings (10 restarts,
512 raw samples, 128 QMC samples, 200 L-BFGS-B iterations) by default.

    python benchmarks/async_anchor.py --seeds 0-4 --pending 4 --jobs 2

prints log10(max HV - HV) at the budget per mode (mean ± standard error over seeds) and the
paired differences, and appends one record per run to ``results/async_anchor.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as harness

DEFAULT_CACHE = harness.RESULTS_DIR / "async_anchor.jsonl"
PROBLEMS = {"BraninCurrin": ("BraninCurrin", {}), "DTLZ2": ("DTLZ2", {"dim": 6})}


def run(problem_name: str, seed: int, width: int, n_trials: int, opts: dict[str, int]) -> dict:
    """One run; ``width`` outstanding trials (1 = sequential). Returns its record."""
    import torch
    from botorch.acquisition.multi_objective.logei import (
        qLogNoisyExpectedHypervolumeImprovement,
    )
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import ModelListGP, SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from botorch.optim import optimize_acqf
    from botorch.sampling.normal import SobolQMCNormalSampler
    from botorch.test_functions import multi_objective
    from botorch.utils.multi_objective.hypervolume import Hypervolume
    from botorch.utils.multi_objective.pareto import is_non_dominated
    from botorch.utils.transforms import unnormalize
    from gpytorch.mlls import SumMarginalLogLikelihood

    torch.set_num_threads(opts["threads"])
    # BoTorch's numerical warnings (jitter added, an L-BFGS restart retried) are routine here.
    warnings.simplefilter("ignore")
    cls, kwargs = PROBLEMS[problem_name]
    # negate=True: BoTorch maximises; the reference point is negated with it.
    problem = getattr(multi_objective, cls)(negate=True, dtype=torch.float64, **kwargs)
    bounds = problem.bounds
    d = problem.dim
    unit = torch.stack([torch.zeros(d), torch.ones(d)]).to(torch.float64)
    n_startup = max(5, min(2 * (d + 1), 10))
    sobol = torch.quasirandom.SobolEngine(d, scramble=True, seed=seed).draw(
        n_trials, dtype=torch.float64
    )
    X_done = torch.empty(0, d, dtype=torch.float64)  # unit cube
    Y_done = torch.empty(0, problem.num_objectives, dtype=torch.float64)
    outstanding: list[torch.Tensor] = []
    proposed: list[list[float]] = []
    suggest_s: list[float] = []
    values: list[list[float]] = []

    def propose() -> None:
        number = len(proposed)
        start = time.perf_counter()
        if len(X_done) + len(outstanding) < n_startup or len(X_done) < 2:
            x = sobol[number : number + 1]
        else:
            torch.manual_seed(seed * 100_003 + number)
            models = [
                SingleTaskGP(X_done, Y_done[:, i : i + 1], outcome_transform=Standardize(m=1))
                for i in range(Y_done.shape[-1])
            ]
            model = ModelListGP(*models)
            fit_gpytorch_mll(SumMarginalLogLikelihood(model.likelihood, model))
            acq = qLogNoisyExpectedHypervolumeImprovement(
                model=model,
                ref_point=problem.ref_point.tolist(),
                X_baseline=X_done,
                prune_baseline=True,
                sampler=SobolQMCNormalSampler(torch.Size([opts["mc_samples"]]), seed=number),
                X_pending=torch.cat(outstanding) if outstanding else None,
            )
            x, _ = optimize_acqf(
                acq,
                bounds=unit,
                q=1,
                num_restarts=opts["num_restarts"],
                raw_samples=opts["raw_samples"],
                options={"batch_limit": 5, "maxiter": opts["maxiter"]},
            )
            x = x.detach()
        suggest_s.append(time.perf_counter() - start)
        proposed.append(unnormalize(x, bounds).squeeze(0).tolist())
        outstanding.append(x)

    def evaluate_oldest() -> None:
        nonlocal X_done, Y_done
        x = outstanding.pop(0)
        y = problem(unnormalize(x, bounds))
        X_done = torch.cat([X_done, x])
        Y_done = torch.cat([Y_done, y])
        values.append((-y).squeeze(0).tolist())  # as minimised metrics, like mobo.py's records

    wall = time.perf_counter()
    while len(proposed) < min(width, n_trials):
        propose()
    while outstanding:
        evaluate_oldest()
        if len(proposed) < n_trials:
            propose()
    wall = time.perf_counter() - wall

    hv = Hypervolume(ref_point=problem.ref_point)
    Y = -torch.tensor(values, dtype=torch.float64)
    front = Y[is_non_dominated(Y)]
    gap = max(float(problem.max_hv) - hv.compute(front), 1e-12)
    return {
        "problem": problem_name,
        "seed": seed,
        "mode": "sequential" if width == 1 else f"pending{width}",
        "n_trials": n_trials,
        "options": opts,
        "params": proposed,
        "values": values,
        "log10_hv_gap": math.log10(gap),
        "suggest_s": suggest_s,
        "wall_s": wall,
        **harness.stamp(),
        "machine": harness.machine(),
        "versions": harness.versions("torch", "botorch", "gpytorch"),
    }


def _stat(xs: list[float]) -> str:
    st = harness.stat(xs)
    if st is None:
        return "-"
    return f"{st.mean:.3f} (n=1)" if st.n == 1 else st.text(3)


def table(records: list[dict[str, Any]], problem: str, n_trials: int, opts: dict) -> list[str]:
    rows = [
        r
        for r in records
        if r["problem"] == problem and r["n_trials"] == n_trials and r["options"] == opts
    ]
    by_mode: dict[str, dict[int, float]] = {}
    for r in rows:
        by_mode.setdefault(r["mode"], {})[r["seed"]] = r["log10_hv_gap"]
    header = [
        "mode",
        "seeds",
        "log10 HV gap",
        "paired gap to sequential",
        "median s / suggestion",
    ]
    table_rows = []
    seq = by_mode.get("sequential", {})
    for mode in sorted(by_mode, key=lambda m: (m != "sequential", m)):
        gaps = by_mode[mode]
        paired = [gaps[s] - seq[s] for s in gaps if s in seq] if mode != "sequential" else []
        times = [
            t
            for r in rows
            if r["mode"] == mode
            for t in r["suggest_s"][max(0, n_trials - 10) : n_trials]
        ]
        table_rows.append(
            [
                mode,
                str(len(gaps)),
                _stat(list(gaps.values())),
                _stat(paired) if paired else "-",
                f"{float(np.median(times)) if times else float('nan'):.2f}",
            ]
        )
    return [
        f"{problem}, {n_trials} trials, plain BoTorch ({json.dumps(opts)}): log10(max HV - HV), "
        "mean ± SE over seeds",
        "",
        *harness.markdown_table(header, table_rows),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", choices=sorted(PROBLEMS), default="BraninCurrin")
    parser.add_argument("--seeds", type=harness.parse_ints, default=list(range(5)))
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--pending", type=int, default=4, help="outstanding trials (>= 2)")
    parser.add_argument("--num-restarts", type=int, default=10)
    parser.add_argument("--raw-samples", type=int, default=512)
    parser.add_argument("--mc-samples", type=int, default=128)
    parser.add_argument("--maxiter", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    if args.pending < 2:
        parser.error("--pending must be at least 2 (1 is the sequential mode)")
    threads = harness.threads_per_job(args.jobs, args.threads)
    opts = {
        "num_restarts": args.num_restarts,
        "raw_samples": args.raw_samples,
        "mc_samples": args.mc_samples,
        "maxiter": args.maxiter,
    }
    records = harness.read_records(args.cache)

    def key(opts_: dict, problem: str, seed: int, mode: str) -> tuple:
        return (problem, seed, mode, args.trials, json.dumps(opts_, sort_keys=True))

    done = {
        key(r["options"], r["problem"], r["seed"], r["mode"]) for r in records if "options" in r
    }
    todo = [
        (seed, width)
        for width in (1, args.pending)
        for seed in args.seeds
        if key(opts, args.problem, seed, "sequential" if width == 1 else f"pending{width}")
        not in done
    ]
    if not args.table_only and todo:
        print(f"{len(todo)} runs to do, {args.jobs} job(s) of {threads} thread(s)", flush=True)
        run_opts = {**opts, "threads": threads}
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = {
                pool.submit(run, args.problem, seed, width, args.trials, run_opts): (seed, width)
                for seed, width in todo
            }
            for future in as_completed(futures):
                record = future.result()
                record["options"] = opts
                harness.append_record(args.cache, record)
                records.append(record)
                print(
                    f"seed {record['seed']} {record['mode']}: log10 HV gap "
                    f"{record['log10_hv_gap']:.3f}, {record['wall_s']:.0f} s",
                    flush=True,
                )
    print("\n".join(table(records, args.problem, args.trials, opts)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
