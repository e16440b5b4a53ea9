"""Dynamic algorithm configuration on real training: does a learned learning-rate policy beat
the best static schedule tuned with the same compute?

    python benchmarks/dac.py --part lm                   # every cell below, then the table
    python benchmarks/dac.py --part lm --only static     # the tuned static families only
    python benchmarks/dac.py --part lm --only pbt        # Ray Tune's PBT and its replays
    python benchmarks/dac.py --part lm --only policy     # the DAC policies (run_dac)
    python benchmarks/dac.py --part lm --table-only --record   # the table; append it to results/

The setting (:data:`SETTING`), fixed: the ``lm`` objective, byte-level, LLaMA-style, width 64,
depth 2, 300 AdamW steps of 16 x 64 tokens, gradient clipping at 1.0, Jane Austen's novels
from ``$PARETUNE_DATA_DIR``. The instance is the ``seed`` setting (initialisation and data
order): runs with one seed differ only in their learning rates (paired seeds). Tuning and
policy training use seeds 0-9 (:data:`TRAIN_SEEDS`); every method is judged on seeds 10-19
(:data:`HELD_OUT`), which nothing was tuned on.

Compute: B = :data:`BUDGET` 300-step runs for each method's tuning or training.

* Static families, each tuned with Optuna's TPE (seeded) over B runs on the training seeds:
  ``constant`` (log LR, 5 % warmup), ``cosine`` (log LR, warmup fraction), ``wsd`` (log LR,
  warmup and decay fractions), ``power`` (the Power scheduler's ``lr_max``, ``b``, and ``a``
  through the rate at mid-run; 5 % warmup, 20 % exponential decay, as
  ``benchmarks/mutransfer.py --part power-joint``). The protocol: :data:`TPE_TRIALS` TPE
  trials, trial ``k`` on training seed ``k % 10``; then the :data:`TOP` best trials are each
  re-run on the same :data:`RESCORE_SEEDS` and the one with the lowest mean loss on those
  seeds is chosen (a comparison on common seeds, so the seed's own difficulty cancels; a
  single-seed loss differs by more between seeds than between good configurations). The
  re-runs count: TPE_TRIALS + TOP x len(RESCORE_SEEDS) = B (fewer where a candidate's own
  trial already ran one of those seeds: a cached run is not run twice). The best static
  schedule is the family whose choice has the lowest mean on the re-score seeds.
* PBT: Ray Tune's ``PopulationBasedTraining`` on each held-out seed (it tunes online, on the
  run it is judged by): population :data:`PBT_POPULATION`, a perturbation every
  :data:`INTERVAL` steps, the learning rate mutated on a log range, exploit copying model,
  optimizer, scheduler and step. Its compute is population x 300 steps per seed. Each trial's
  learning-rate schedule (its lineage's, carried in the checkpoint) is saved as JSON, and the
  best trial's is replayed from scratch through the ``dynamic`` setting with
  :class:`~paretune.search.dac.ScheduleDecider` (what the schedule is worth without PBT's
  weight copying).
* DAC policies, trained with :func:`paretune.search.dac.run_dac` over B episodes on the
  training seeds (episodes are trials of an Optuna study), evaluated greedily on the held-out
  seeds (:data:`POLICY_DESIGNS`).

Cells are cached in ``results/cache/dac-lm-*.jsonl`` (static and replay runs, keyed by their
settings), ``results/cache/dac-lm-pbt/`` (one JSON per PBT seed) and
``results/cache/dac-lm-policy/`` (the run_dac studies, which resume), so a rerun resumes.
The table: per method the mean held-out loss with its 95 % t interval, the paired difference
to the best static schedule (method minus static, negative is better) with its 95 % t
interval, and the compute.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
CACHE = RESULTS / "cache"
CELLS = CACHE / "dac-lm-cells.jsonl"
STATIC_DIR = CACHE / "dac-lm-static"
PBT_DIR = CACHE / "dac-lm-pbt"
POLICY_DIR = CACHE / "dac-lm-policy"
SUMMARY = RESULTS / "dac.jsonl"

#: The training setting of every run (the ``lm`` objective's settings), written once.
SETTING: dict[str, Any] = {
    "architecture": "llama",
    "width": 64,
    "base_width": 64,
    "depth": 2,
    "steps": 300,
    "batch_size": 16,
    "sequence_length": 64,
    "max_grad_norm": 1.0,
    "tokenizer": "bytes",
    "eval_windows": 128,
    "evals": 1,
}
STEPS = 300
TRAIN_SEEDS = tuple(range(10))
HELD_OUT = tuple(range(10, 20))
#: B: the 300-step runs each method tunes or trains with.
BUDGET = 32
TPE_TRIALS = 23
TOP = 3
RESCORE_SEEDS = (0, 1, 2)
TPE_SEED = 0
PARALLEL = 2
#: The learning-rate range every family and PBT searches.
LR_RANGE = (1e-4, 3e-2)
#: The loss Optuna is told for a diverged run: a uniform prediction over 256 bytes.
DIVERGED = math.log(256)
INTERVAL = 25
PBT_POPULATION = 4


def key_of(settings: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Cells: one run of the lm objective each, cached by its settings


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_cell(settings: dict[str, Any], replay: dict[str, list[float]] | None = None) -> dict:
    """One run of the lm objective (a replayed schedule through ``ctx.decide`` where given);
    a diverged run is a result (loss NaN), not an error."""
    from paretune.objectives import TrialContext
    from paretune.objectives.lm import LM, Diverged

    started = time.perf_counter()
    ctx = TrialContext(trial_number=0)
    if replay is not None:
        from paretune.search.dac import ScheduleDecider

        decider = ScheduleDecider(tuple(int(s) for s in replay["steps"]), tuple(replay["values"]))
        ctx.set_decider(decider.build(ctx))
    try:
        val_loss = LM(**settings)({}, ctx)["val_loss"]
    except Diverged:
        val_loss = math.nan
    return {
        "key": key_of({**settings, "replay": replay}),
        "settings": settings,
        "replay": replay,
        "val_loss": val_loss,
        "seconds": time.perf_counter() - started,
    }


class Cells:
    """The cached cells, and a process pool that computes the missing ones; thread-safe, so
    the families' Optuna loops share it."""

    def __init__(self, jobs: int, threads: int) -> None:
        self.done = {r["key"]: r for r in read_records(CELLS)}
        self.lock = threading.Lock()
        self.running: dict[str, cf.Future] = {}
        self.jobs, self.threads = jobs, threads
        self._pool: cf.ProcessPoolExecutor | None = None

    @property
    def pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self.jobs, initializer=_init_worker, initargs=(self.threads,)
            )
        return self._pool

    def submit(self, settings: dict[str, Any], replay: dict | None = None) -> cf.Future:
        key = key_of({**settings, "replay": replay})
        with self.lock:
            if key in self.done:
                future: cf.Future = cf.Future()
                future.set_result(self.done[key])
                return future
            if key not in self.running:
                self.running[key] = self.pool.submit(run_cell, settings, replay)
                self.running[key].add_done_callback(self._store)
            return self.running[key]

    def _store(self, future: cf.Future) -> None:
        record = future.result()
        with self.lock:
            if record["key"] not in self.done:
                append_record(CELLS, record)
                self.done[record["key"]] = record
        s = record["settings"]
        print(
            f"    seed {s['seed']:>2} {describe(s, record['replay'])}: "
            f"{record['val_loss']:.4f} ({record['seconds']:.0f} s)",
            flush=True,
        )

    def run(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        futures = [self.submit(s) for s in batch]
        return [f.result() for f in futures]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def describe(settings: Mapping[str, Any], replay: Mapping[str, Any] | None = None) -> str:
    schedule = dict(settings.get("schedule", {}))
    kind = schedule.pop("type", "?")
    if replay is not None:
        return f"replay {kind} ({len(replay['steps'])} values)"
    lr = settings.get("learning_rate")
    parts = [kind] + ([f"lr {lr:.3g}"] if lr is not None and kind != "power" else [])
    parts += [f"{k} {v:.3g}" for k, v in schedule.items() if isinstance(v, float)]
    return " ".join(parts)


def loss_of(record: Mapping[str, Any]) -> float:
    value = record["val_loss"]
    return value if math.isfinite(value) else DIVERGED


# --------------------------------------------------------------------------------------------
# Static families, tuned with Optuna


@dataclass(frozen=True)
class Family:
    """A static schedule family: how a trial's parameters become the lm objective's settings."""

    name: str
    suggest: Callable[[Any], dict[str, float]]
    settings: Callable[[Mapping[str, float]], dict[str, Any]]


def _lr(trial: Any) -> float:
    return trial.suggest_float("learning_rate", *LR_RANGE, log=True)


# The Power scheduler's rate at mid-run, after n_mid tokens: a = lr_mid / (batch * n_mid^b), so
# that a and b are searched independently (a alone moves by orders of magnitude with b).
N_MID = STEPS // 2 * SETTING["batch_size"] * SETTING["sequence_length"]

FAMILIES: dict[str, Family] = {
    "constant": Family(
        "constant",
        lambda t: {"learning_rate": _lr(t)},
        lambda p: {
            "learning_rate": p["learning_rate"],
            "schedule": {"type": "constant", "warmup_fraction": 0.05},
        },
    ),
    "cosine": Family(
        "cosine",
        lambda t: {
            "learning_rate": _lr(t),
            "warmup_fraction": t.suggest_float("warmup_fraction", 0.0, 0.3),
        },
        lambda p: {
            "learning_rate": p["learning_rate"],
            "schedule": {"type": "cosine", "warmup_fraction": p["warmup_fraction"]},
        },
    ),
    "wsd": Family(
        "wsd",
        lambda t: {
            "learning_rate": _lr(t),
            "warmup_fraction": t.suggest_float("warmup_fraction", 0.0, 0.3),
            "decay_fraction": t.suggest_float("decay_fraction", 0.05, 0.65),
        },
        lambda p: {
            "learning_rate": p["learning_rate"],
            "schedule": {
                "type": "wsd",
                "warmup_fraction": p["warmup_fraction"],
                "decay_fraction": p["decay_fraction"],
            },
        },
    ),
    "power": Family(
        "power",
        lambda t: {
            "lr_max": t.suggest_float("lr_max", *LR_RANGE, log=True),
            "lr_mid": t.suggest_float("lr_mid", *LR_RANGE, log=True),
            "b": t.suggest_float("b", -0.8, -0.05),
        },
        lambda p: {
            "learning_rate": 1.0,
            "schedule": {
                "type": "power",
                "a": p["lr_mid"] / (SETTING["batch_size"] * N_MID ** p["b"]),
                "b": p["b"],
                "lr_max": p["lr_max"],
                "warmup_fraction": 0.05,
                "decay_fraction": 0.2,
            },
        },
    ),
}


def run_settings(extra: Mapping[str, Any], seed: int) -> dict[str, Any]:
    return {**SETTING, **extra, "seed": seed}


def tune_family(cells: Cells, family: Family) -> dict[str, Any]:
    """TPE over TPE_TRIALS runs, the TOP re-scored on RESCORE_SEEDS, the choice on HELD_OUT."""
    import optuna

    # Two trials at a time (the two workers), told in the order asked: a rerun asks the same
    # candidates, so cached runs are found again. The constant liar keeps the pair apart.
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=TPE_SEED, constant_liar=True),
    )
    trials: list[tuple[dict[str, float], int, float]] = []
    for start in range(0, TPE_TRIALS, PARALLEL):
        asked = []
        for k in range(start, min(start + PARALLEL, TPE_TRIALS)):
            trial = study.ask()
            params = family.suggest(trial)
            seed = TRAIN_SEEDS[k % len(TRAIN_SEEDS)]
            asked.append(
                (trial, params, seed, cells.submit(run_settings(family.settings(params), seed)))
            )
        for trial, params, seed, future in asked:
            loss = loss_of(future.result())
            study.tell(trial, loss)
            trials.append((params, seed, loss))
    top = sorted(range(len(trials)), key=lambda i: trials[i][2])[:TOP]
    rescored = {
        i: cells.run([run_settings(family.settings(trials[i][0]), s) for s in RESCORE_SEEDS])
        for i in top
    }
    means = {i: float(np.mean([loss_of(r) for r in rescored[i]])) for i in top}
    chosen = min(top, key=lambda i: (means[i], i))
    runs = {key_of(run_settings(family.settings(p), s)) for p, s, _ in trials} | {
        key_of(r["settings"]) for rs in rescored.values() for r in rs
    }
    held = cells.run([run_settings(family.settings(trials[chosen][0]), s) for s in HELD_OUT])
    print(f"  {family.name}: chosen trial {chosen} {trials[chosen][0]}, {means[chosen]:.4f}")
    return {
        "family": family.name,
        "trials": [{"params": p, "seed": s, "val_loss": v} for p, s, v in trials],
        "rescored": {str(i): means[i] for i in top},
        "chosen": trials[chosen][0],
        "chosen_settings": family.settings(trials[chosen][0]),
        "rescore_mean": means[chosen],
        "tuning_runs": len(runs),
        "held_out": [r["val_loss"] for r in held],
    }


def static_part(cells: Cells, names: list[str]) -> dict[str, dict[str, Any]]:
    """The families one after the other (each complete before the next starts), each saved
    to STATIC_DIR as it finishes."""
    print(f"\n## static families, TPE over {BUDGET} runs each: {', '.join(names)}")
    STATIC_DIR.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        out[name] = tune_family(cells, FAMILIES[name])
        (STATIC_DIR / f"{name}.json").write_text(json.dumps(out[name], indent=1))
    return out


# --------------------------------------------------------------------------------------------
# PBT: Ray Tune's PopulationBasedTraining on each held-out seed

# Every PBT run is built with this base learning rate; a trial's own rate is set through
# Run.set_learning_rate, so that all trials' schedulers (and so their checkpoints) agree.
PBT_BASE_LR = 1e-3
PBT_SCHEDULE = {"type": "constant", "warmup_fraction": 0.05}


def pbt_trainable(config: dict[str, Any]) -> None:
    """A Tune function trainable: one lm run of ``config["seed"]`` at ``config["lr"]``, a
    report (and a checkpoint of model, optimizer, scheduler, step and the schedule so far)
    every INTERVAL steps; resumed from the checkpoint PBT gives it after an exploit."""
    import tempfile

    import torch
    from ray import tune

    from paretune.objectives.lm._data import load_corpus
    from paretune.objectives.lm._settings import checked
    from paretune.objectives.lm._train import Run

    torch.set_num_threads(1)
    settings = checked(
        run_settings({"learning_rate": PBT_BASE_LR, "schedule": PBT_SCHEDULE}, config["seed"])
    )
    corpus = load_corpus(settings.data, settings.tokenizer, settings.validation_fraction)
    run = Run(settings, corpus, seed=config["seed"])
    schedule: list[list[float]] = []  # [step, lr] from which each rate held: the lineage's
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / "state.pt", weights_only=False)
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        run.steps_done = state["steps_done"]
        run.lr_value, run.lr_scale = state["lr_value"], state["lr_scale"]
        schedule = state["schedule"]
    run.set_learning_rate(config["lr"])
    while run.steps_done < run.total_steps:
        if not schedule or schedule[-1][1] != config["lr"]:
            schedule.append([run.steps_done, config["lr"]])
        losses = [run.step() for _ in range(min(INTERVAL, run.total_steps - run.steps_done))]
        val_loss = run.evaluate()
        with tempfile.TemporaryDirectory() as directory:
            torch.save(
                {
                    "model": run.model.state_dict(),
                    "optimizer": run.optimizer.state_dict(),
                    "scheduler": run.scheduler.state_dict(),
                    "steps_done": run.steps_done,
                    "lr_value": run.lr_value,
                    "lr_scale": run.lr_scale,
                    "schedule": schedule,
                },
                Path(directory) / "state.pt",
            )
            tune.report(
                {
                    "val_loss": val_loss,
                    "train_loss": float(np.mean(losses)),
                    "step": run.steps_done,
                    "lr": config["lr"],
                    "steps_computed": len(losses),
                    "schedule": json.dumps(schedule),
                },
                checkpoint=tune.Checkpoint.from_directory(directory),
            )


def pbt_seed(seed: int, storage: Path) -> dict[str, Any]:
    """PBT on one held-out seed; every trial's final loss, schedule and steps computed."""
    import random

    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator

    random.seed(seed)  # PBT's explore draws
    np.random.seed(seed)
    pbt = PopulationBasedTraining(
        time_attr="step",
        metric="val_loss",
        mode="min",
        perturbation_interval=INTERVAL,
        hyperparam_mutations={"lr": tune.loguniform(*LR_RANGE)},
        quantile_fraction=0.25,  # of 4: the worst copies the best
        resample_probability=0.25,
    )
    started = time.perf_counter()
    tuner = tune.Tuner(
        # 4 trials at once on the 2 CPUs (one torch thread each): PBT's generations stay in step
        tune.with_resources(pbt_trainable, {"cpu": 0.5}),
        param_space={"lr": tune.loguniform(*LR_RANGE), "seed": seed},
        tune_config=tune.TuneConfig(
            scheduler=pbt,
            num_samples=PBT_POPULATION,
            search_alg=BasicVariantGenerator(random_state=seed),
        ),
        run_config=tune.RunConfig(
            name=f"pbt-seed{seed}",
            storage_path=str(storage),
            verbose=0,
            # Every checkpoint is kept: an exploit may copy any trial's latest, and Tune would
            # otherwise delete one another trial is about to restore (a few MB each).
        ),
    )
    grid = tuner.fit()
    trials = []
    for result in grid:
        frame = result.metrics_dataframe
        metrics = result.metrics or {}
        trials.append(
            {
                "trial": Path(result.path).name,
                "val_loss": metrics.get("val_loss", math.nan),
                "step": metrics.get("step"),
                "schedule": json.loads(metrics.get("schedule", "[]")),
                "steps_computed": int(frame["steps_computed"].sum()) if frame is not None else 0,
                "error": None if result.error is None else str(result.error),
            }
        )
    finished = [t for t in trials if t["step"] == STEPS and math.isfinite(t["val_loss"])]
    best = min(finished, key=lambda t: t["val_loss"]) if finished else None
    return {
        "seed": seed,
        "trials": trials,
        "best": None if best is None else best["trial"],
        "val_loss": math.nan if best is None else best["val_loss"],
        "best_schedule": None if best is None else best["schedule"],
        "steps_computed": sum(t["steps_computed"] for t in trials),
        "seconds": time.perf_counter() - started,
    }


def replay_settings() -> dict[str, Any]:
    """A PBT schedule replayed: the same base schedule, the rate set through ``dynamic``."""
    return {
        "learning_rate": PBT_BASE_LR,
        "schedule": PBT_SCHEDULE,
        "dynamic": {"interval": INTERVAL, "low": LR_RANGE[0] / 2, "high": LR_RANGE[1] * 2},
    }


def pbt_part(cells: Cells, seeds: tuple[int, ...]) -> dict[int, dict[str, Any]]:
    print(f"\n## PBT: population {PBT_POPULATION}, every {INTERVAL} steps, seeds {list(seeds)}")
    PBT_DIR.mkdir(parents=True, exist_ok=True)
    out: dict[int, dict[str, Any]] = {}
    todo = [s for s in seeds if not (PBT_DIR / f"seed{s}.json").exists()]
    if todo:
        import ray

        ray.init(
            num_cpus=2,
            include_dashboard=False,
            runtime_env={
                "env_vars": {
                    # The checkout (paretune) and benchmarks/ (this module, which Tune's
                    # workers import to run pbt_trainable).
                    "PYTHONPATH": os.pathsep.join(
                        [str(Path(__file__).resolve().parent.parent), str(Path(__file__).parent)]
                    ),
                    "PARETUNE_DATA_DIR": os.environ["PARETUNE_DATA_DIR"],
                    "HF_HUB_OFFLINE": "1",
                }
            },
        )
        try:
            for seed in todo:
                storage = Path("/tmp") / f"paretune-dac-lm-ray-{os.getpid()}"
                result = pbt_seed(seed, storage)
                shutil.rmtree(storage / f"pbt-seed{seed}", ignore_errors=True)
                (PBT_DIR / f"seed{seed}.json").write_text(json.dumps(result, indent=1))
                print(
                    f"    seed {seed}: PBT {result['val_loss']:.4f}, "
                    f"{result['steps_computed']} steps, {result['seconds']:.0f} s",
                    flush=True,
                )
        finally:
            ray.shutdown()
    for seed in seeds:
        out[seed] = json.loads((PBT_DIR / f"seed{seed}.json").read_text())
    # The best trial's schedule replayed from scratch, without the weights PBT copied.
    futures = {
        seed: cells.submit(
            run_settings(replay_settings(), seed),
            replay={
                "steps": [int(s) for s, _ in r["best_schedule"]],
                "values": [float(v) for _, v in r["best_schedule"]],
            },
        )
        for seed, r in out.items()
        if r["best_schedule"]
    }
    for seed, future in futures.items():
        out[seed]["replay_val_loss"] = future.result()["val_loss"]
        (PBT_DIR / f"seed{seed}.json").write_text(json.dumps(out[seed], indent=1))
    return out


# --------------------------------------------------------------------------------------------
# DAC policies, trained with run_dac

#: The LR the untuned policies start from: the lm objective's default (no tuning spent on it).
POLICY_BASE_LR = 3e-3


@dataclass(frozen=True)
class Design:
    """A policy design: the dynamic learning rate it controls and how it is trained."""

    name: str
    summary: str
    dynamic: dict[str, Any]
    algorithm: str
    policy: dict[str, Any]
    trainer: dict[str, Any]
    batch: int = 4
    #: The static family it modulates (its tuned schedule under the policy), or None: a
    #: constant schedule at POLICY_BASE_LR.
    on_top_of: str | None = None


POLICY_DESIGNS: dict[str, Design] = {
    "scale": Design(
        "scale",
        "x0.5 / x1 / x2 on the LR every 25 steps, all state features, REINFORCE",
        {
            "actions": [0.5, 1.0, 2.0],
            "mode": "scale",
            "interval": INTERVAL,
            "low": LR_RANGE[0],
            "high": LR_RANGE[1],
            "initial": POLICY_BASE_LR,
        },
        "reinforce",
        {"hidden": 16},
        {"lr": 0.05, "entropy": 0.01},
    ),
    "levels": Design(
        "levels",
        "a learned schedule: one of 9 log-spaced LRs every 25 steps from (progress, loss), PPO",
        {"interval": INTERVAL, "low": LR_RANGE[0], "high": LR_RANGE[1]},
        "ppo",
        {"features": ["progress", "loss"], "levels": 9, "hidden": 16},
        {"lr": 0.05, "entropy": 0.01, "epochs": 4},
    ),
    "wsd-mod": Design(
        "wsd-mod",
        "x0.5 / x1 / x2 every 25 steps on top of the tuned WSD schedule, REINFORCE",
        {"actions": [0.5, 1.0, 2.0], "mode": "scale", "interval": INTERVAL},
        "reinforce",
        {"hidden": 16},
        {"lr": 0.05, "entropy": 0.01},
        on_top_of="wsd",
    ),
}


def design_settings(design: Design, static: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    if design.on_top_of is None:
        base = {
            "learning_rate": POLICY_BASE_LR,
            "schedule": {"type": "constant", "warmup_fraction": 0.05},
        }
        return {**SETTING, **base, "dynamic": design.dynamic}
    tuned = static[design.on_top_of]["chosen_settings"]
    lr = tuned["learning_rate"]
    dynamic = {"low": lr / 8, "high": min(1.0, lr * 8), "initial": lr, **design.dynamic}
    return {**SETTING, **tuned, "dynamic": dynamic}


def policy_design(design: Design, static: Mapping[str, dict[str, Any]], jobs: int) -> dict:
    """One design trained over BUDGET episodes (trials of a study in POLICY_DIR) on the
    training seeds, then run greedily on the held-out seeds; resumes a stopped run."""
    from paretune.objectives import Metric
    from paretune.search import LocalRunnerSettings, ObjectiveRef
    from paretune.search.dac import DACPlan, dac_space, run_dac
    from paretune.spaces.dynamic import dynamic_param_from_dict
    from paretune.trials_store import StudyConfig

    directory = POLICY_DIR / design.name
    directory.mkdir(parents=True, exist_ok=True)
    settings = design_settings(design, static)
    from paretune.objectives.lm._settings import checked

    param = checked(settings).dynamic_lr()
    assert param is not None
    instances = tuple({"seed": s} for s in TRAIN_SEEDS)
    held_out = tuple({"seed": s} for s in HELD_OUT)
    database = directory / "study.db"
    plan = DACPlan(
        study=StudyConfig(
            name=f"dac-lm-{design.name}",
            storage_url=f"sqlite:///{database}",
            run_dir=directory,
            metrics=(Metric("val_loss", "minimize"),),
            space=dac_space(BUDGET, len(instances), len(held_out)),
            seed=0,
        ),
        objective=ObjectiveRef(type="lm", settings=settings),
        param=dynamic_param_from_dict(param.to_dict()),
        instances=instances,
        held_out=held_out,
        episodes=BUDGET,
        batch=design.batch,
        algorithm=design.algorithm,
        trainer=design.trainer,
        policy=design.policy,
        seed=0,
        runner=LocalRunnerSettings(n_jobs=jobs, threads=1, device="cpu"),
        policy_path=directory / "policy.json",
        evaluate_static=False,
    )
    started = time.perf_counter()
    result = run_dac(plan, resume=database.exists())
    trials = result.store.study.get_trials(deepcopy=False)
    episodes = [
        t.user_attrs.get("paretune.metrics", {}).get("val_loss")
        for t in trials
        if not t.user_attrs.get("paretune.label") and t.state.is_finished()
    ]
    greedy = {
        str(t.user_attrs.get("paretune.label")): [
            d["value"] for d in t.user_attrs.get("paretune.trajectory", [])
        ]
        for t in trials
        if str(t.user_attrs.get("paretune.label") or "").startswith("eval")
    }
    return {
        "design": design.name,
        "summary": design.summary,
        "settings": settings,
        "episodes": len(episodes),
        "episode_losses": episodes,
        "updates": result.updates,
        "held_out": [e.get("policy", math.nan) for e in result.evaluation],
        "greedy_schedules": greedy,
        "policy": result.policy.snapshot().to_dict(),
        "seconds": time.perf_counter() - started,
        "interrupted": result.interrupted,
    }


def policy_part(
    names: list[str], static: Mapping[str, dict[str, Any]], jobs: int
) -> dict[str, dict[str, Any]]:
    out = {}
    for name in names:
        design = POLICY_DESIGNS[name]
        if design.on_top_of is not None and design.on_top_of not in static:
            print(f"\n## policy {name}: needs the tuned {design.on_top_of} family first; skipped")
            continue
        print(f"\n## policy {name}: {design.summary}; {BUDGET} episodes")
        out[name] = policy_design(design, static, jobs)
        held = out[name]["held_out"]
        print(f"    held-out mean {np.nanmean(held):.4f} ({out[name]['seconds']:.0f} s)")
        (POLICY_DIR / name / "result.json").write_text(json.dumps(out[name], default=str))
    return out


# --------------------------------------------------------------------------------------------
# The table


def t_interval(values: list[float]) -> tuple[float, float, int]:
    """Mean and the 95 % t interval's half-width of the finite ``values`` (NaN if < 2)."""
    from scipy import stats

    arr = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(arr) < 2:
        return (float(arr.mean()) if len(arr) else math.nan), math.nan, len(arr)
    half = float(stats.t.ppf(0.975, len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr)))
    return float(arr.mean()), half, len(arr)


def table(
    static: Mapping[str, dict[str, Any]],
    pbt: Mapping[int, dict[str, Any]],
    policies: Mapping[str, dict[str, Any]],
) -> tuple[list[str], dict[str, Any]]:
    """The rows: per method its held-out losses (seeds 10-19 in order) and compute."""
    rows: dict[str, dict[str, Any]] = {}
    for name, r in static.items():
        rows[f"static {name}"] = {
            "losses": r["held_out"],
            "compute": f"{r['tuning_runs']} tuning runs + 1 run per seed",
            "tuning_runs": r["tuning_runs"],
        }
    if pbt:
        seeds = [s for s in HELD_OUT if s in pbt]
        steps = [pbt[s]["steps_computed"] for s in seeds]
        rows["PBT (best trial)"] = {
            "losses": [pbt[s]["val_loss"] for s in seeds],
            "seeds": seeds,
            "compute": f"{np.mean(steps) / STEPS:.2f} runs per seed ({PBT_POPULATION} x {STEPS} "
            "steps, online)",
        }
        rows["PBT schedule replayed"] = {
            "losses": [pbt[s].get("replay_val_loss", math.nan) for s in seeds],
            "seeds": seeds,
            "compute": "PBT's, + 1 run per seed",
        }
    for name, r in policies.items():
        extra = ""
        design = POLICY_DESIGNS[name]
        if design.on_top_of is not None:
            extra = f" + {static[design.on_top_of]['tuning_runs']} ({design.on_top_of} tuning)"
        rows[f"policy {name}"] = {
            "losses": r["held_out"],
            "compute": f"{r['episodes']} episodes{extra} + 1 run per seed",
        }
    best = None
    if static:
        best = min(static, key=lambda n: static[n]["rescore_mean"])
    reference = static[best]["held_out"] if best else None
    lines = markdown_table(
        ["method", "held-out val_loss (95 % t)", "n", "minus best static (95 % t)", "compute"],
        [],
    )
    summary: dict[str, Any] = {"best_static": best, "rows": {}}
    for method, row in rows.items():
        mean, half, n = t_interval(row["losses"])
        diff_text, diff = "-", None
        if reference is not None:
            seeds = row.get("seeds", list(HELD_OUT))
            ref = dict(zip(HELD_OUT, reference, strict=True))
            diffs = [
                loss - ref[s] for s, loss in zip(seeds, row["losses"], strict=True) if s in ref
            ]
            d_mean, d_half, d_n = t_interval(diffs)
            diff = {"mean": d_mean, "half": d_half, "n": d_n, "values": diffs}
            diff_text = f"{d_mean:+.4f} ± {d_half:.4f}"
        name = f"**{method}** (best static)" if best and method == f"static {best}" else method
        lines.append(f"| {name} | {mean:.4f} ± {half:.4f} | {n} | {diff_text} | {row['compute']} |")
        summary["rows"][method] = {**row, "mean": mean, "half": half, "n": n, "diff": diff}
    return lines, summary


# --------------------------------------------------------------------------------------------
# The command


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/dac.py --part lm ...``: the arguments after the script's name."""
    parser = argparse.ArgumentParser(prog="dac.py --part lm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("lm",), default="lm")
    parser.add_argument(
        "--only",
        default="static,pbt,policy",
        help="comma-separated cells to run: static, pbt, policy (the table reads all cached)",
    )
    parser.add_argument("--families", default="wsd,cosine,constant,power")
    parser.add_argument("--designs", default=None, help="policy designs (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, in processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    if "PARETUNE_DATA_DIR" not in os.environ:
        print("set PARETUNE_DATA_DIR to the data directory (lm_corpus/austen.txt.gz)")
        return 2
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    only = set(args.only.split(","))
    m, v = machine(), versions("torch", "transformers", "optuna", "ray", "numpy", git=True)
    print(f"machine: {machine_text(m)}\nversions: {versions_text(v)}")
    print(f"setting: {json.dumps(SETTING)}; train seeds 0-9, held-out seeds 10-19, B = {BUDGET}")
    started = time.perf_counter()
    cells = Cells(args.jobs, args.threads)
    designs = args.designs.split(",") if args.designs else list(POLICY_DESIGNS)
    try:
        if not args.table_only:
            if "static" in only:
                static_part(cells, args.families.split(","))
            if "pbt" in only:
                pbt_part(cells, HELD_OUT)
            if "policy" in only:
                policy_part(designs, cached(STATIC_DIR, "*.json", "family"), args.jobs)
    finally:
        cells.close()
    seconds = time.perf_counter() - started
    static = cached(STATIC_DIR, "*.json", "family")
    pbt = {int(k): v for k, v in cached(PBT_DIR, "seed*.json", "seed").items()}
    policies = cached(POLICY_DIR, "*/result.json", "design")
    lines, summary = table(static, pbt, policies)
    print(f"\n## held-out seeds {HELD_OUT[0]}-{HELD_OUT[-1]}, B = {BUDGET} runs\n")
    print("\n".join(lines))
    for name, r in static.items():
        print(
            f"- {name}: chosen {r['chosen']} (mean {r['rescore_mean']:.4f} on seeds "
            f"{list(RESCORE_SEEDS)})"
        )
    missing = (
        [f for f in FAMILIES if f not in static]
        + [f"PBT seed {s}" for s in HELD_OUT if s not in pbt]
        + [f"policy {d}" for d in POLICY_DESIGNS if d not in policies]
    )
    if missing:
        print(f"- not yet run: {', '.join(missing)}")
    print(f"\n{seconds:.0f} s")
    if args.record:
        append_record(
            SUMMARY,
            {
                **stamp(),
                "part": "lm",
                "machine": m,
                "versions": v,
                "setting": SETTING,
                "budget": BUDGET,
                "held_out": list(HELD_OUT),
                "seconds": seconds,
                "table": summary,
                "static": static,
                "pbt": pbt,
                "policies": {
                    k: {kk: vv for kk, vv in p.items() if kk != "policy"}
                    for k, p in policies.items()
                },
                "missing": missing,
            },
        )
        print(f"appended to {SUMMARY}")
    return 0


def cached(directory: Path, pattern: str, key: str) -> dict[str, Any]:
    """The finished cells saved as JSON under ``directory``, by their ``key`` field."""
    out = {}
    for path in sorted(directory.glob(pattern)):
        data = json.loads(path.read_text())
        out[str(data[key])] = data
    return out


if __name__ == "__main__":
    sys.exit(main(["--part", "lm", *sys.argv[1:]]))
