"""``benchmarks/dac.py --part dacbench``: paretune's DAC policy on DACBench's learning-rate
benchmark, against DACBench's own static and random agents.

DACBench (``pip install dacbench``, not a paretune dependency) has two learning-rate
benchmarks. ``SGDBenchmark`` trains small networks on torchvision's MNIST/CIFAR, which it
downloads at run time; this workplace reaches PyPI only, so this part runs ``ToySGDBenchmark``
("Learning Rate and Momentum Adaption for SGD on Toy Functions"): SGD with momentum on a batch
of 16 points of a toy function for 10 steps; the action is ``[log10 lr, log10 momentum]`` in
``[-10, 0]^2``; the observation holds the remaining budget, the 16 gradients, the current lr
and momentum; each step's reward is the negative mean ``log10`` regret of the 16 points.

What it runs:

- **Instances**: ``toysgd_default.csv`` (100 instances; ``--instance-set mixed`` for
  ``toysgd_mixed.csv``). DACBench's config names the same file as its test set, so there is no
  held-out set of its own: instances with an even ID train, those with an odd ID are held out.
- **Episodes** are made functions of ``(instance, seed)``: DACBench 0.5.6's ``ToySGDEnv``
  ignores ``reset``'s options and draws its 16 starting points from a generator made once when
  the env is built, so a small wrapper chooses the instance and seeds that generator at each
  ``reset`` (the starts' distribution is DACBench's). Every agent meets the same starts on the
  same instance (paired comparisons).
- **paretune**: a :class:`~paretune.search.dac.Policy` over the learning rate (9 levels,
  log-spaced over ``[1e-4, 1]``; momentum held at the static agent's value), features
  progress (from the remaining budget), loss (the current mean ``log10`` regret, read from the
  env), its slope, the gradient's norm and ``log2 lr``; trained by
  :func:`~paretune.search.dac.train_on_env` with a ``to_state`` adapter, then evaluated greedy.
- **static (DACBench default)**: ``StaticAgent`` with the default of DACBench's configuration
  space (``log10 lr = log10 momentum = -5``); DACBench ships no recommended static action for
  this benchmark (``run_baselines.py --static`` needs ``--actions``).
- **static (best of a grid)**: ``StaticAgent`` with the ``log10 lr`` of
  ``{-4, -3.5, ..., 0}`` whose mean return over the training instances is highest.
- **random**: DACBench's ``RandomAgent`` (uniform actions in the action box), its action space
  seeded per evaluation seed.

What it reports: the mean return (sum of the 10 rewards; higher is better) and the final mean
``log10`` regret of each agent on the held-out instances; each instance's value is its mean
over the evaluation seeds, and 95 % t intervals are over instances; paired differences of
paretune against each baseline, per instance.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import _harness as harness  # benchmarks/ is on sys.path when run as a script
import numpy as np

RESULTS = harness.RESULTS_DIR / "dac.jsonl"
DISTS = ("numpy", "torch", "gymnasium", "dacbench")
INSTANCE_SETS = {"default": "toysgd_default.csv", "mixed": "toysgd_mixed.csv"}


def import_dacbench() -> tuple[Any, str | None]:
    """``(dacbench's benchmarks and agents, None)``, or ``(None, why not)``.

    DACBench 0.5.6's ``dacbench.envs`` imports its SGD env whenever torch is installed, and
    that env imports torchvision at module level even though torchvision is optional
    (``dacbench.benchmarks`` checks for it). Without torchvision the loader module of that env
    (MNIST/CIFAR downloads, unused here) is replaced by one that raises if called.
    """
    if importlib.util.find_spec("dacbench") is None:
        return None, "dacbench is not installed (pip install dacbench; see benchmarks/README.md)"
    if importlib.util.find_spec("torchvision") is None:
        name = "dacbench.envs.env_utils.sgd_utils"
        stub = types.ModuleType(name)

        def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("DACBench's SGDBenchmark needs torchvision and its datasets")

        stub.random_torchvision_loader = unavailable  # type: ignore[attr-defined]
        stub.random_instance = unavailable  # type: ignore[attr-defined]
        sys.modules.setdefault(name, stub)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "CMA-ES Benchmark not installed" and the like
            from dacbench.agents import RandomAgent, StaticAgent
            from dacbench.benchmarks import ToySGDBenchmark
    except Exception as err:  # an incompatible dacbench: say why and skip
        return None, f"dacbench could not be imported: {type(err).__name__}: {err}"
    return types.SimpleNamespace(
        ToySGDBenchmark=ToySGDBenchmark, StaticAgent=StaticAgent, RandomAgent=RandomAgent
    ), None


@dataclass(frozen=True)
class Settings:
    instance_set: str = "default"
    updates: int = 150
    batch: int = 16
    algorithm: str = "ppo"
    lr: float = 0.02
    entropy: float = 0.01
    hidden: int = 16
    levels: int = 9
    low: float = 1e-4
    train_seed: int = 0
    eval_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    static_grid: tuple[float, ...] = tuple(np.round(np.arange(-4.0, 0.01, 0.5), 2))


def make_env(db: Any, instance_set: str) -> Any:
    """DACBench's ToySGD env, its episodes keyed by ``reset(seed, options={"instance": id})``."""
    import gymnasium

    bench = db.ToySGDBenchmark()  # DACBench's default config
    bench.config["instance_set_path"] = bench.config["test_set_path"] = INSTANCE_SETS[instance_set]
    with warnings.catch_warnings():  # DACBench's float64 Box bounds, cast to float32
        warnings.simplefilter("ignore", UserWarning)
        env = bench.get_environment()

    class Episodes(gymnasium.Wrapper):  # type: ignore[misc]
        """Choose the instance and seed the starting points at every reset."""

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
            base = self.env.unwrapped
            base.instance_updates = None  # no round robin: the instance chosen here
            instance = (options or {}).get("instance")
            if instance is not None:
                base.use_next_instance(instance_id=int(instance))
            if seed is not None:
                base.rng = np.random.default_rng(seed)
            return self.env.reset(seed=seed)

    return Episodes(env)


def log_regret(env: Any) -> float:
    """The env's current mean ``log10`` regret over its 16 points (the negated reward)."""
    base = env.unwrapped
    return float(-base.get_default_reward(None))


class ToSGDState:
    """``to_state``: DACBench's observation (and the regret the env exposes) as a
    :class:`~paretune.spaces.dynamic.DecisionState`."""

    def __init__(self) -> None:
        self.previous: float | None = None

    def __call__(self, obs: dict, info: dict, env: Any) -> Any:
        from paretune.spaces.dynamic import DecisionState

        base = env.unwrapped
        remaining = float(np.asarray(obs["remaining_budget"]).reshape(-1)[0])
        if remaining >= base.n_steps:  # a new episode
            self.previous = None
        regret = log_regret(env)
        slope = 0.0 if self.previous is None else regret - self.previous
        self.previous = regret
        lr = float(np.asarray(obs["learning_rate"]).reshape(-1)[0])
        gradient = np.asarray(obs["gradient"], dtype=np.float64)
        return DecisionState(
            step=int(base.n_steps - remaining),
            progress=1.0 - remaining / base.n_steps,
            loss=regret,
            loss_slope=slope,
            grad_norm=float(np.linalg.norm(gradient) / math.sqrt(gradient.size)),
            value=lr if lr > 0 else math.nan,
            name="learning_rate",
        )


def to_action(log_momentum: float) -> Callable[[Any, Any], np.ndarray]:
    def convert(decision: Any, env: Any) -> np.ndarray:
        return np.array([math.log10(decision.value), log_momentum], dtype=np.float32)

    return convert


def play(
    env: Any, act: Callable[[Any, float], Any], instance: int, seed: int
) -> tuple[float, float]:
    """One episode of a DACBench-style agent (``act(state, reward)``): its return and the final
    mean ``log10`` regret."""
    obs, _ = env.reset(seed=seed, options={"instance": instance})
    total, reward = 0.0, 0.0
    while True:
        obs, reward, terminated, truncated, _ = env.step(act(obs, reward))
        total += float(reward)
        if terminated or truncated:
            return total, log_regret(env)


def t_interval(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean and the half-width of its 95 % t interval."""
    from scipy import stats

    arr = np.asarray(values, dtype=np.float64)
    if len(arr) < 2:
        return float(arr.mean()), math.nan, len(arr)
    half = float(stats.t.ppf(0.975, len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr)))
    return float(arr.mean()), half, len(arr)


def run(settings: Settings, *, record: bool = True) -> int:
    db, why = import_dacbench()
    if db is None:
        print(f"dac --part dacbench: skipped: {why}")
        return 0
    import torch

    from paretune.search.dac import Policy, PolicyTrainer, train_on_env
    from paretune.search.dac._env_train import run_episode
    from paretune.spaces.dynamic import DynamicParam

    torch.set_num_threads(1)
    started = time.perf_counter()
    env = make_env(db, settings.instance_set)
    ids = sorted(env.unwrapped.instance_set)
    train_ids = [i for i in ids if i % 2 == 0]
    held_ids = [i for i in ids if i % 2 == 1]
    default = db.ToySGDBenchmark().config.config_space.get_default_configuration()
    default_action = np.array(
        [default["0_log_learning_rate"], default["1_log_momentum"]], dtype=np.float32
    )
    log_momentum = float(default_action[1])

    def evaluate(
        act_for_seed: Callable[[int], Callable[[Any, float], Any]], instances: Sequence[int]
    ) -> dict[str, list[float]]:
        returns, regrets = [], []
        for i in instances:
            per_seed = [play(env, act_for_seed(s), i, 1000 * s + i) for s in settings.eval_seeds]
            returns.append(float(np.mean([r for r, _ in per_seed])))
            regrets.append(float(np.mean([g for _, g in per_seed])))
        return {"return": returns, "regret": regrets}

    # The best static learning rate on the training instances (momentum as the default's).
    grid = {}
    for lr in settings.static_grid:
        action = np.array([lr, log_momentum], dtype=np.float32)
        grid[lr] = float(
            np.mean(evaluate(lambda s, a=action: lambda obs, r: a, train_ids)["return"])
        )
    best_lr = max(grid, key=lambda k: grid[k])

    # paretune: train on the training instances.
    param = DynamicParam(name="learning_rate", low=settings.low, high=1.0, log=True)
    policy = Policy(
        param,
        features=["progress", "loss", "loss_slope", "log10_grad_norm", "log2_value"],
        hidden=settings.hidden,
        levels=settings.levels,
        seed=settings.train_seed,
    )
    trainer = PolicyTrainer(
        policy,
        algorithm=settings.algorithm,
        lr=settings.lr,
        entropy=settings.entropy,  # type: ignore[arg-type]
    )
    to_state = ToSGDState()
    convert = to_action(log_momentum)
    train_started = time.perf_counter()
    stats = train_on_env(
        env,
        policy,
        trainer,
        episodes=settings.updates * settings.batch,
        batch=settings.batch,
        instances=train_ids,
        seed=settings.train_seed,
        to_state=to_state,
        to_action=convert,
    )
    train_seconds = time.perf_counter() - train_started

    returns, regrets = [], []
    for i in held_ids:
        per_seed = []
        for s in settings.eval_seeds:
            episode = run_episode(
                env, policy, instance=i, seed=1000 * s + i, to_state=to_state, to_action=convert
            )
            per_seed.append((episode.reward, log_regret(env)))
        returns.append(float(np.mean([r for r, _ in per_seed])))
        regrets.append(float(np.mean([g for _, g in per_seed])))
    results = {"paretune (trained, greedy)": {"return": returns, "regret": regrets}}
    results["static (DACBench default)"] = evaluate(
        lambda s: db.StaticAgent(env, default_action).act, held_ids
    )
    results[f"static (best of grid: log10 lr {best_lr:g})"] = evaluate(
        lambda s: db.StaticAgent(env, np.array([best_lr, log_momentum], dtype=np.float32)).act,
        held_ids,
    )

    def random_agent(seed: int) -> Callable[[Any, float], Any]:
        env.action_space.seed(seed)
        return db.RandomAgent(env).act

    results["random (DACBench)"] = evaluate(random_agent, held_ids)
    seconds = time.perf_counter() - started

    v = harness.versions(*DISTS, git=True)
    print(
        f"DACBench {INSTANCE_SETS[settings.instance_set]}: trained on {len(train_ids)} "
        f"instances (even IDs), held out {len(held_ids)} (odd IDs) x seeds "
        f"{list(settings.eval_seeds)}"
    )
    print(
        f"paretune: {settings.algorithm}, {settings.updates} updates x {settings.batch} "
        f"episodes, {train_seconds:.0f} s; last update's mean return "
        f"{stats[-1]['reward']:.3f} (first {stats[0]['reward']:.3f})"
    )
    print(f"versions: {harness.versions_text(v)}; {harness.machine_text(harness.machine())}")
    print()
    header = ["agent", "mean return (95 % CI)", "final log10 regret (95 % CI)"]
    rows = []
    for name, r in results.items():
        m, h, n = t_interval(r["return"])
        g, gh, _ = t_interval(r["regret"])
        rows.append([name, f"{m:.3f} ± {h:.3f}", f"{g:.3f} ± {gh:.3f}"])
    print("\n".join(harness.markdown_table(header, rows)))
    print()
    ours = np.asarray(results["paretune (trained, greedy)"]["return"])
    diff_rows = []
    paired = {}
    for name, r in results.items():
        if name.startswith("paretune"):
            continue
        m, h, n = t_interval(ours - np.asarray(r["return"]))
        wins = int(np.sum(ours > np.asarray(r["return"])))
        paired[name] = {"mean": m, "half_width": h, "n": n, "wins": wins}
        diff_rows.append([f"paretune - {name}", f"{m:+.3f} ± {h:.3f}", f"{wins}/{n}"])
    print(
        "\n".join(
            harness.markdown_table(
                ["paired difference of returns", "mean (95 % CI)", "instances won"], diff_rows
            )
        )
    )
    print(f"\nwall time {seconds:.0f} s")
    if record:
        harness.append_record(
            RESULTS,
            {
                **harness.stamp(),
                "part": "dacbench",
                "machine": harness.machine(),
                "versions": v,
                "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
                "train_ids": train_ids,
                "held_out_ids": held_ids,
                "static_grid": grid,
                "best_static_log10_lr": best_lr,
                "train_stats": stats,
                "results": results,
                "paired": paired,
                "seconds": seconds,
                "train_seconds": train_seconds,
            },
        )
    return 0
