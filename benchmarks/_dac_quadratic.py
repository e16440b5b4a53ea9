"""``benchmarks/dac.py --part quadratic``: a learning-rate policy trained by ``paretune dac``
on the noisy quadratic against the best constant learning rate, tuned with Optuna at the same
compute, on held-out instances (paired: same start and noise draws per instance).

Protocol. Training instances are seeds 0-9, held-out ones 100-109 (``--held-out``).
* Constant LR: Optuna's ``GridSampler`` over ``--grid`` log-spaced rates in [0.0125, 1.6],
  each evaluated on all 10 training seeds (grid x 10 runs = the compute); the rate with the
  best mean training log10 loss is run on the held-out seeds.
* Policy: ``paretune dac`` (``examples/dac.yaml``'s settings) with ``--episodes`` episodes
  (= grid x 10, the same compute), evaluated greedily on the held-out seeds.
The table gives mean held-out log10 loss with 95 % t intervals and the paired difference
(policy minus constant; negative is better).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parent


def interval(values: list[float]) -> tuple[float, float]:
    x = np.asarray(values, dtype=float)
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return float(x.mean()), half


def best_constant(grid: int, train: list[int]) -> tuple[float, dict[float, float]]:
    import optuna

    from paretune.objectives import NoisyQuadratic, TrialContext

    rates = [float(v) for v in np.geomspace(0.0125, 1.6, grid)]
    objective = NoisyQuadratic(dim=20, steps=200)
    study = optuna.create_study(
        sampler=optuna.samplers.GridSampler({"lr": rates, "seed": train}, seed=0)
    )

    def run(trial: optuna.Trial) -> float:
        lr = trial.suggest_categorical("lr", rates)
        seed = trial.suggest_categorical("seed", train)
        ctx = TrialContext(trial_number=trial.number)
        return objective({"learning_rate": lr, "seed": seed}, ctx)["log10_loss"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(run, n_trials=grid * len(train))
    means: dict[float, list[float]] = {}
    for t in study.trials:
        means.setdefault(t.params["lr"], []).append(float(t.value))
    table = {lr: float(np.mean(v)) for lr, v in means.items()}
    return min(table, key=lambda lr: table[lr]), table


def main(args: argparse.Namespace) -> dict[str, Any]:
    from paretune.objectives import NoisyQuadratic, TrialContext
    from paretune.spec import run_dac_spec

    train = list(range(10))
    held = args.held_out
    t0 = time.monotonic()
    lr, table = best_constant(args.grid, train)
    t_const = time.monotonic() - t0
    objective = NoisyQuadratic(dim=20, steps=200)
    constant = [
        objective({"learning_rate": lr, "seed": s}, TrialContext(trial_number=0))["log10_loss"]
        for s in held
    ]
    episodes = args.grid * len(train)
    work = Path(args.run_dir or tempfile.mkdtemp(prefix="dac-quadratic-"))
    t1 = time.monotonic()
    overrides = [
        f"run_dir={work}",
        f"dac.episodes={episodes}",
        f"dac.held_out={{seed: {held}}}",
        f"dac.algorithm={args.algorithm}",
        f"dac.seed={args.seed}",
    ]
    result = run_dac_spec(ROOT.parent / "examples" / "dac.yaml", overrides=overrides)
    t_dac = time.monotonic() - t1
    policy = [e["policy"] for e in result.evaluation]
    diff = [p - c for p, c in zip(policy, constant, strict=True)]
    c_mean, c_half = interval(constant)
    p_mean, p_half = interval(policy)
    d_mean, d_half = interval(diff)
    print(f"best constant LR (grid of {args.grid} on seeds 0-9, {episodes} runs): {lr:.4g}")
    print(
        f"| method | runs to tune/train | held-out log10 loss (mean +- 95 % t, n={len(held)}) |"
        " paired diff vs constant |"
    )
    print("|---|---|---|---|")
    print(f"| best constant LR ({lr:.3g}) | {episodes} | {c_mean:.4f} +- {c_half:.4f} | |")
    print(
        f"| paretune dac ({args.algorithm}) | {episodes} | {p_mean:.4f} +- {p_half:.4f} | "
        f"{d_mean:+.4f} [{d_mean - d_half:+.4f}, {d_mean + d_half:+.4f}] |"
    )
    print(f"wall: constant sweep {t_const:.0f} s, dac {t_dac:.0f} s; run dir {work}")
    return {
        "part": "quadratic",
        "best_lr": lr,
        "grid_means": {f"{k:.5g}": v for k, v in table.items()},
        "constant": constant,
        "policy": policy,
        "held_out": held,
        "episodes": episodes,
        "algorithm": args.algorithm,
        "seed": args.seed,
        "diff_mean": d_mean,
        "diff_half": d_half,
        "seconds": {"constant": t_const, "dac": t_dac},
    }
