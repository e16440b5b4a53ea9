"""muTransfer on CPU: does the best learning rate of a narrow proxy stay best at 8x the width
under muP, and drift under standard parametrization (SP)?

    python benchmarks/mutransfer.py                    # widths 32, 64, 256; SP and muP; seeds 0,1
    python benchmarks/mutransfer.py --record           # and append the summary to results/
    python benchmarks/mutransfer.py --part power       # Power vs tuned WSD on the proxy
    python benchmarks/mutransfer.py --part power-joint --seeds 0,1,2,3   # (a, b, lr_max) for all
    python benchmarks/mutransfer.py --steps 100 --widths 32,64 --seeds 0   # a smoke test

Every cell is one run of the real ``lm`` objective (:mod:`paretune.objectives.lm`): a 2-block
LLaMA-style decoder (head dimension 16, width grown by heads, base width 32, untied readout),
byte-level, on Jane Austen's novels from ``$PARETUNE_DATA_DIR``, AdamW (betas 0.9, 0.95),
gradient clipping at 1.0, WSD schedule (5 % warmup, linear decay to 0 over the last 20 %: the
LR cooldown), batch 16 x 64 tokens. Cells of one seed share the initialisation's random draws
and the data order (paired seeds), so they differ only in width, parametrization and LR.

The learning-rate sweep is a half-octave grid in log2(LR), adaptive per (parametrization,
width): it starts at ``--start`` +- 1 octave and extends by a half octave past an edge that
holds the best mean loss (up to ``--max-points``), so every optimum is bracketed. Results are
cached cell by cell in ``results/cache/mutransfer-cells.jsonl``: an interrupted run resumes where it
stopped (a cell is keyed by everything that sets its result).

What it prints (mean over paired seeds):
- per (parametrization, width): the grid, the loss at each point, the best log2 LR;
- the transfer: the LR chosen on the proxies (every width but the largest: the grid point of
  the lowest mean loss summed over proxies, each relative to its own best), run at the
  largest width, against that width's own best sweep cell; whether loss decreases with
  width at the transferred LR ("wider is better"); SP's loss at the largest width with the
  base width's best LR;
- the cost: the proxies' sweeps in FLOPs against the direct sweep at the largest width
  (same grid points).
It writes the loss-vs-log2(LR) figure per width (Tensor Programs V, figure 1) as a
self-contained HTML file.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import itertools
import json
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from paretune.search.steplaw import best_lr_per_cell

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    append_record,
    machine,
    machine_text,
    markdown_table,
    read_records,
    stamp,
    versions,
    versions_text,
)

RESULTS = Path(__file__).resolve().parent / "results"
# Cells are a cache, not records (no machine or argv per line): kept apart from the records.
CELLS = RESULTS / "cache" / "mutransfer-cells.jsonl"
SUMMARY = RESULTS / "mutransfer.jsonl"


def settings_for(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    base = {
        "architecture": "llama",
        "depth": args.depth,
        "head_dim": 16,
        "base_width": args.base_width,
        "sequence_length": args.sequence_length,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "max_grad_norm": 1.0,
        "schedule": {"type": "wsd", "warmup_fraction": 0.05, "decay_fraction": 0.2},
        "eval_windows": 128,
        "evals": 1,
    }
    base.update(extra)
    return base


def key_of(settings: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_cell(settings: dict[str, Any]) -> dict[str, Any]:
    """One run of the lm objective; a diverged run is a result (loss NaN), not an error."""
    from paretune.objectives import TrialContext
    from paretune.objectives.lm import LM, Diverged

    started = time.perf_counter()
    objective = LM(**settings)
    try:
        metrics = objective({}, TrialContext(trial_number=0))
    except Diverged:
        metrics = {"val_loss": math.nan, "flops": math.nan}
    return {
        "key": key_of(settings),
        "settings": settings,
        "val_loss": metrics["val_loss"],
        "flops": metrics["flops"],
        "seconds": time.perf_counter() - started,
    }


class Cells:
    """The cached cells, and a pool that computes the missing ones."""

    def __init__(self, jobs: int, threads: int) -> None:
        self.done = {r["key"]: r for r in read_records(CELLS)} if CELLS.exists() else {}
        self.pool = cf.ProcessPoolExecutor(
            max_workers=jobs, initializer=_init_worker, initargs=(threads,)
        )

    def get(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        todo = [s for s in batch if key_of(s) not in self.done]
        unique = {key_of(s): s for s in todo}
        if unique:
            print(f"  running {len(unique)} cell(s) ({len(self.done)} cached)", flush=True)
        futures = [self.pool.submit(run_cell, s) for s in unique.values()]
        for future in cf.as_completed(futures):
            record = future.result()
            append_record(CELLS, record)
            self.done[record["key"]] = record
            s = record["settings"]
            print(
                f"    {s['parametrization']:>3} width {s['width']:>4} log2 lr "
                f"{math.log2(s['learning_rate']):6.2f} seed {s['seed']}: "
                f"{record['val_loss']:.4f} ({record['seconds']:.0f} s)",
                flush=True,
            )
        return [self.done[key_of(s)] for s in batch]


def mean_loss(records: list[dict[str, Any]]) -> float:
    losses = [r["val_loss"] for r in records]
    return math.inf if any(not math.isfinite(x) for x in losses) else float(np.mean(losses))


def sweep(
    cells: Cells, args: argparse.Namespace, groups: list[dict[str, Any]]
) -> dict[tuple[str, int], dict[float, list[dict[str, Any]]]]:
    """The adaptive half-octave sweep of every group ({parametrization, width, ...}) at once."""
    grids = {
        (g["parametrization"], g["width"]): [args.start + d for d in (-1, -0.5, 0, 0.5, 1)]
        for g in groups
    }
    extra = {(g["parametrization"], g["width"]): g for g in groups}
    results: dict[tuple[str, int], dict[float, list[dict[str, Any]]]] = defaultdict(dict)
    while True:
        batch: list[dict[str, Any]] = []
        for group, grid in grids.items():
            for log2_lr in grid:
                if log2_lr in results[group]:
                    continue
                for seed in args.seeds:
                    batch.append(
                        settings_for(
                            args,
                            **extra[group],
                            learning_rate=2.0**log2_lr,
                            seed=seed,
                        )
                    )
        if not batch:
            break
        records = cells.get(batch)
        for s, r in zip(batch, records, strict=True):
            group = (s["parametrization"], s["width"])
            results[group].setdefault(math.log2(s["learning_rate"]), []).append(r)
        for group, grid in grids.items():
            losses = {x: mean_loss(results[group][x]) for x in grid}
            best = min(grid, key=lambda x: (losses[x], x))
            if len(grid) >= args.max_points:
                continue
            if best == grid[0]:
                grid.insert(0, grid[0] - 0.5)
            elif best == grid[-1] and math.isfinite(losses[best]):
                grid.append(grid[-1] + 0.5)
    return results


def best_of(points: dict[float, list[dict[str, Any]]]) -> float:
    return min(points, key=lambda x: (mean_loss(points[x]), x))


def figure(results: dict[tuple[str, int], dict[float, list[dict[str, Any]]]], path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    kinds = sorted({k for k, _ in results}, key=lambda k: k != "sp")
    fig = make_subplots(
        rows=1, cols=len(kinds), shared_yaxes=True, subplot_titles=[k.upper() for k in kinds]
    )
    widths = sorted({w for _, w in results})
    palette = ["#c6dbef", "#6baed6", "#2171b5", "#08306b", "#041a3a", "#000000"]
    for col, kind in enumerate(kinds, start=1):
        for i, width in enumerate(widths):
            points = results.get((kind, width))
            if not points:
                continue
            xs = sorted(points)
            ys = [mean_loss(points[x]) for x in xs]
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=[y if math.isfinite(y) else None for y in ys],
                    mode="lines+markers",
                    name=f"width {width}",
                    legendgroup=str(width),
                    showlegend=col == 1,
                    line={"color": palette[i % len(palette)]},
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="log2 learning rate", row=1, col=col)
    fig.update_yaxes(title_text="validation loss (nats/byte)", row=1, col=1)
    fig.update_layout(title="Validation loss against learning rate per width (mean over seeds)")
    fig.write_html(path, include_plotlyjs=True, full_html=True)


def transfer_part(args: argparse.Namespace, cells: Cells) -> dict[str, Any]:
    groups = [
        {"parametrization": kind, "width": width}
        for kind in args.parametrizations
        for width in args.widths
    ]
    results = sweep(cells, args, groups)
    target, proxies = args.widths[-1], args.widths[:-1]
    summary: dict[str, Any] = {"widths": args.widths, "seeds": args.seeds, "steps": args.steps}
    lines: list[str] = []
    for kind in args.parametrizations:
        per_width = {w: results[(kind, w)] for w in args.widths}
        best = {w: best_of(per_width[w]) for w in args.widths}
        lines.append(f"\n### {kind.upper()}\n")
        grid = sorted({x for w in args.widths for x in per_width[w]})
        rows = []
        for w in args.widths:
            cells_text = []
            for x in grid:
                if x not in per_width[w]:
                    cells_text.append("")
                    continue
                loss = mean_loss(per_width[w][x])
                text = "diverged" if not math.isfinite(loss) else f"{loss:.4f}"
                cells_text.append(f"**{text}**" if x == best[w] else text)
            rows.append([str(w), *cells_text, f"{best[w]:g}"])
        lines += markdown_table(["width", *[f"{x:g}" for x in grid], "best log2 LR"], rows)
        # The LR chosen on the proxies: lowest summed regret over the proxy widths.
        common = sorted(set.intersection(*(set(per_width[w]) for w in proxies)))
        regret = {
            x: sum(mean_loss(per_width[w][x]) - mean_loss(per_width[w][best[w]]) for w in proxies)
            for x in common
        }
        chosen = min(common, key=lambda x: (regret[x], x))
        at_target = (
            mean_loss(per_width[target][chosen]) if chosen in per_width[target] else math.nan
        )
        target_best = mean_loss(per_width[target][best[target]])
        at_chosen = [
            mean_loss(per_width[w][chosen]) if chosen in per_width[w] else math.nan
            for w in args.widths
        ]
        wider_better = all(b < a for a, b in itertools.pairwise(at_chosen))
        base_best = best[args.widths[0]]
        base_at_target = (
            mean_loss(per_width[target][base_best]) if base_best in per_width[target] else math.nan
        )
        proxy_flops = sum(
            r["flops"] for w in proxies for x in per_width[w] for r in per_width[w][x]
        )
        direct_flops = sum(r["flops"] for x in per_width[target] for r in per_width[target][x])
        drift = max(best.values()) - min(best.values())
        # A less noisy estimate of each optimum: the vertex of the parabola in log2 LR through
        # the best grid point and its two neighbours (Step Law's fits refine the same way).
        refined = {}
        for w in args.widths:
            rows_w = [
                (float(w), 1.0, 2.0**x, r["val_loss"])
                for x in per_width[w]
                for r in per_width[w][x]
                if math.isfinite(r["val_loss"])
            ]
            cells_w = best_lr_per_cell(rows_w, refine=True)
            refined[w] = math.log2(cells_w[0][2]) if cells_w else math.nan
        refined_drift = max(refined.values()) - min(refined.values())
        summary[kind] = {
            "best_log2_lr": {str(w): best[w] for w in args.widths},
            "drift_octaves": drift,
            "refined_log2_lr": {str(w): refined[w] for w in args.widths},
            "refined_drift_octaves": refined_drift,
            "chosen_on_proxies": chosen,
            "loss_at_target_with_chosen": at_target,
            "target_best_loss": target_best,
            "transfer_gap": at_target / target_best - 1,
            "loss_at_chosen_per_width": at_chosen,
            "wider_is_better": wider_better,
            "loss_at_target_with_base_best": base_at_target,
            "proxy_flops_fraction": proxy_flops / direct_flops,
        }
        lines += [
            "",
            f"- best log2 LR per width: {', '.join(f'{w}: {best[w]:g}' for w in args.widths)} "
            f"(drift {drift:g} octave(s)); refined by a parabola: "
            f"{', '.join(f'{w}: {refined[w]:.2f}' for w in args.widths)} (drift "
            f"{refined_drift:.2f})",
            f"- chosen on the proxies ({', '.join(map(str, proxies))}): log2 LR {chosen:g}; at "
            f"width {target}: {at_target:.4f} against its own best {target_best:.4f} "
            f"({100 * (at_target / target_best - 1):+.2f} %)",
            f"- loss at the chosen LR by width: "
            f"{', '.join(f'{w}: {v:.4f}' for w, v in zip(args.widths, at_chosen, strict=True))}"
            f" (wider is better: {'yes' if wider_better else 'NO'})",
            f"- width {target} at the base width's best log2 LR ({base_best:g}): "
            f"{base_at_target:.4f} ({100 * (base_at_target / target_best - 1):+.2f} % over its "
            "best)",
            f"- cost: the proxies' sweeps took {100 * proxy_flops / direct_flops:.1f} % of the "
            f"direct sweep's FLOPs at width {target}",
        ]
    print("\n".join(lines))
    path = RESULTS / "mutransfer.html"
    figure(results, path)
    print(f"\nwrote {path}")
    return summary


def power_settings(
    args: argparse.Namespace, width: int, batch: int, steps: int, a: float
) -> list[dict[str, Any]]:
    """The Power runs of one setting, one per seed (``learning_rate`` 1: the schedule's value
    is the learning rate)."""
    sub = argparse.Namespace(**{**vars(args), "batch_size": batch, "steps": steps})
    return [
        settings_for(
            sub,
            parametrization="mup",
            width=width,
            seed=seed,
            learning_rate=1.0,
            schedule={
                "type": "power",
                "a": a,
                "b": args.power_b,
                "lr_max": args.power_lr_max,
                "warmup_fraction": 0.05,
                "decay_fraction": 0.2,
            },
        )
        for seed in args.seeds
    ]


def power_part(args: argparse.Namespace, cells: Cells) -> dict[str, Any]:
    """The Power scheduler with one (a, b) against WSD tuned per setting, on the proxy.

    ``--power-a 4 --power-b -0.51`` is the paper's schedule; by default ``a`` and ``b`` are
    calibrated once, on the largest setting (batch 16, ``--steps``), on a grid (as Shen et al.
    fit a and b on small proxies), then held for the other settings.
    """
    width = args.widths[0]
    lines = [f"\n### Power (one a, b) against WSD tuned per setting, width {width}, muP\n"]
    summary: dict[str, Any] = {}
    a, b = args.power_a, args.power_b
    if a is None:
        # One (a, b) for every setting, fitted on the largest: for each b, a grid of a whose
        # value at mid-run (n = steps/2 x 16 x 64 tokens) runs from 2^-9 to 2^-5.5.
        n_mid = args.steps / 2 * 16 * args.sequence_length
        bs = [args.power_b] if b is not None else [-0.51, -0.35, -0.2]
        calibration: dict[tuple[float, float], float] = {}
        for b_value in bs:
            for k in range(8):
                lr_mid = 2.0 ** (-9 + k / 2)
                a_value = lr_mid / (16 * n_mid**b_value)
                sub = argparse.Namespace(**{**vars(args), "power_b": b_value})
                calibration[(a_value, b_value)] = mean_loss(
                    cells.get(power_settings(sub, width, 16, args.steps, a_value))
                )
        a, b = min(calibration, key=lambda ab: (calibration[ab], ab))
        lines.append(
            f"(a, b) calibrated at batch 16 x {args.steps} steps over b in {bs} and a from "
            f"mid-run rates 2^-9..2^-5.5: a = {a:.4g}, b = {b:g}, loss {calibration[(a, b)]:.4f} "
            "(the paper's a = 4, b = -0.51)\n"
        )
        summary["calibration"] = [
            {"a": ab[0], "b": ab[1], "loss": loss} for ab, loss in calibration.items()
        ]
    elif b is None:
        b = -0.51
    args = argparse.Namespace(**{**vars(args), "power_b": b})
    summary["a"], summary["b"] = a, b
    summary.update(gap_table(args, cells, width, a, b, lines))
    print("\n".join(lines))
    return summary


def power_joint_part(args: argparse.Namespace, cells: Cells) -> dict[str, Any]:
    """One (a, b, lr_max) chosen for all four settings at once, then checked on fresh seeds.

    The calibration (on ``--seeds``) takes the grid point whose worst gap to WSD tuned per
    setting is smallest: b in {-0.35, -0.2, -0.1}, lr_max in {2^-7.5, 2^-7}, and ``a`` set so
    that the rate at mid-run of the smallest setting (batch 8 x steps/2) is 2^-8.5..2^-7. The
    check repeats WSD's sweep and the chosen Power schedule on ``--check-seeds``, so neither
    the schedule's choice nor WSD's tuned LR comes from the seeds it is judged on.
    """
    width = args.widths[0]
    lines = [f"\n### Power (one a, b, lr_max for every setting) against tuned WSD, width {width}\n"]
    n_mid = args.steps / 4 * 8 * args.sequence_length
    grid = [
        (2.0 ** (-8.5 + k / 2) / (8 * n_mid**b), b, lr_max)
        for b in (-0.35, -0.2, -0.1)
        for lr_max in (2.0**-7.5, 2.0**-7)
        for k in range(4)
    ]
    worst: dict[tuple[float, float, float], float] = {}
    for a, b, lr_max in grid:
        sub = argparse.Namespace(**{**vars(args), "power_b": b, "power_lr_max": lr_max})
        gaps = gap_table(sub, cells, width, a, b, [])
        worst[(a, b, lr_max)] = max(g["gap"] for g in gaps.values())
    a, b, lr_max = min(worst, key=lambda abm: (worst[abm], abm))
    lines.append(
        f"calibrated on seeds {args.seeds} over {len(grid)} (a, b, lr_max): a = {a:.4g}, "
        f"b = {b:g}, lr_max = 2^{math.log2(lr_max):g}, "
        f"worst gap {100 * worst[(a, b, lr_max)]:+.2f} %\n"
    )
    lines.append(f"checked on seeds {args.check_seeds} (WSD swept again on them):\n")
    check = argparse.Namespace(
        **{**vars(args), "seeds": args.check_seeds, "power_b": b, "power_lr_max": lr_max}
    )
    summary: dict[str, Any] = {
        "a": a,
        "b": b,
        "lr_max": lr_max,
        "calibration_seeds": args.seeds,
        "check_seeds": args.check_seeds,
        "calibration": [
            {"a": k[0], "b": k[1], "lr_max": k[2], "worst_gap": v} for k, v in worst.items()
        ],
    }
    summary["check"] = gap_table(check, cells, width, a, b, lines)
    print("\n".join(lines))
    return summary


def gap_table(
    args: argparse.Namespace,
    cells: Cells,
    width: int,
    a: float,
    b: float,
    lines: list[str],
) -> dict[str, Any]:
    """Power (a, b, ``args.power_lr_max``) against WSD tuned per setting, on ``args.seeds``:
    the mean losses, the gap, and the paired per-seed gaps' 95 % t interval."""
    from scipy import stats

    settings_grid = [(batch, steps) for batch in (8, 16) for steps in (args.steps // 2, args.steps)]
    summary: dict[str, Any] = {}
    rows = []
    for batch, steps in settings_grid:
        sub = argparse.Namespace(**{**vars(args), "batch_size": batch, "steps": steps})
        tuned = sweep(cells, sub, [{"parametrization": "mup", "width": width}])
        points = tuned[("mup", width)]
        best_lr = best_of(points)
        wsd_runs = sorted(points[best_lr], key=lambda r: r["settings"]["seed"])
        power_runs = sorted(
            cells.get(power_settings(args, width, batch, steps, a)),
            key=lambda r: r["settings"]["seed"],
        )
        wsd, power = mean_loss(wsd_runs), mean_loss(power_runs)
        gap = power / wsd - 1
        paired = np.array(
            [p["val_loss"] / w["val_loss"] - 1 for p, w in zip(power_runs, wsd_runs, strict=True)]
        )
        half = (
            float(stats.t.ppf(0.975, len(paired) - 1) * paired.std(ddof=1) / math.sqrt(len(paired)))
            if len(paired) > 1 and np.isfinite(paired).all()
            else math.nan
        )
        summary[f"batch{batch}_steps{steps}"] = {
            "wsd_best_log2_lr": best_lr,
            "wsd": wsd,
            "power": power,
            "gap": gap,
            "paired_gap_mean": float(paired.mean()),
            "paired_gap_ci95": half,
        }
        rows.append(
            [
                str(batch),
                str(steps),
                f"{best_lr:g}",
                f"{wsd:.4f}",
                f"{power:.4f}",
                f"{100 * gap:+.2f} %",
                f"{100 * paired.mean():+.2f} +- {100 * half:.2f} %",
            ]
        )
    lines += markdown_table(
        [
            "batch",
            "steps",
            "WSD best log2 LR",
            "WSD tuned",
            f"Power (a {a:.3g}, b {b:g})",
            "Power - WSD",
            "paired, per seed (95 % t)",
        ],
        rows,
    )
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--part", choices=("transfer", "power", "power-joint", "all"), default="transfer"
    )
    parser.add_argument("--widths", default="32,64,256")
    parser.add_argument("--parametrizations", default="sp,mup")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--base-width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--start", type=float, default=-7.0, help="the grid's centre, log2 LR")
    parser.add_argument("--max-points", type=int, default=9)
    parser.add_argument(
        "--power-a", type=float, default=None, help="default: calibrated once (see power_part)"
    )
    parser.add_argument(
        "--power-b", type=float, default=None, help="default: calibrated with a (see power_part)"
    )
    parser.add_argument("--power-lr-max", type=float, default=0.02)
    parser.add_argument(
        "--check-seeds", default="4,5,6,7", help="power-joint: the seeds the choice is checked on"
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, in processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    args.widths = sorted(int(x) for x in args.widths.split(","))
    args.parametrizations = [x.strip() for x in args.parametrizations.split(",")]
    args.seeds = [int(x) for x in args.seeds.split(",")]
    args.check_seeds = [int(x) for x in args.check_seeds.split(",")]
    if "PARETUNE_DATA_DIR" not in os.environ:
        print("set PARETUNE_DATA_DIR to the data directory (lm_corpus/austen.txt.gz)")
        return 2
    RESULTS.mkdir(exist_ok=True)
    m, v = machine(), versions("torch", "transformers", "numpy", "plotly", git=True)
    print(f"machine: {machine_text(m)}\nversions: {versions_text(v)}")
    print(
        f"widths {args.widths}, seeds {args.seeds}, {args.steps} steps of {args.batch_size} x "
        f"{args.sequence_length} tokens, depth {args.depth}, base width {args.base_width}"
    )
    cells = Cells(args.jobs, args.threads)
    started = time.perf_counter()
    summary: dict[str, Any] = {}
    if args.part in ("transfer", "all"):
        summary["transfer"] = transfer_part(args, cells)
    if args.part in ("power", "all"):
        summary["power"] = power_part(args, cells)
    if args.part == "power-joint":
        summary["power_joint"] = power_joint_part(args, cells)
    print(f"\n{time.perf_counter() - started:.0f} s")
    if args.record:
        append_record(SUMMARY, {**stamp(), "machine": m, "versions": v, **summary})
        print(f"appended to {SUMMARY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
