"""A DAC training run: episodes are the trials of a study, the policy learns between them.

:func:`run_dac` trains a :class:`~paretune.search.dac.Policy` on an objective that calls
``ctx.decide``: each episode is one trial (one training run of the objective on one of the
training instances), run by any runner (this process, worker processes, Ray workers), with
the policy snapshot of the moment in its job. Every ``batch`` finished episodes the policy is
updated (REINFORCE or PPO), saved (a JSON file, the study, the MLflow parent run's
``policy/policy.json``), and the next episodes get the new snapshot. After training, the
held-out instances are run with the greedy policy, and with the parameter held at its
initial value (the static reference), as labelled trials of the same study.

Nothing is lost on a crash: the trajectories are in the trials, the policy and the
baselines in the study after each update, so a resumed run continues from the last update
with the episodes finished since.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paretune._errors import ConfigError, StudyError
from paretune.search._jobs import DeciderRef, Job, ObjectiveRef, Outcome
from paretune.search._loop import Budget, Started, StopPolicy, StudyTrials
from paretune.search._runner import RunnerSettings, make_runner
from paretune.search._signals import SearchInterrupted
from paretune.search.dac._deciders import PolicyDecider
from paretune.search.dac._policy import Policy, PolicySnapshot
from paretune.search.dac._update import ALGORITHMS, Episode, PolicyTrainer
from paretune.spaces.dynamic import Decision, DynamicParam
from paretune.trials_store import (
    INTERRUPTED_ATTR,
    LABEL_ATTR,
    METRICS_ATTR,
    TRAJECTORY_ATTR,
)

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from paretune.trials_store import PendingTrial, StudyConfig, TrialsStore

__all__ = [
    "DAC_ATTR",
    "DACPlan",
    "DACResult",
    "dac_space",
    "episode_rewards",
    "run_dac",
]

_log = logging.getLogger(__name__)

#: Study attribute: the policy, the trainer's state and the episodes it has learned from.
DAC_ATTR = "paretune.dac"
#: Study attribute: the process that drives the DAC run (:func:`claim_driver`).
DRIVER_ATTR = "paretune.dac.driver"
#: Trial attribute of a held-out evaluation: the updates of the policy it evaluated.
UPDATES_ATTR = "paretune.dac.updates"
EPISODE = "episode"
INSTANCE = "instance"
EVAL_LABEL = "eval"
STATIC_LABEL = "static"


@dataclass(frozen=True, kw_only=True)
class DACPlan:
    """Everything one DAC training run needs.

    Attributes:
        study: The study (its space from :func:`dac_space`, its one metric the reward's).
        objective: The objective; it calls ``ctx.decide`` for ``param``.
        param: The dynamic parameter the policy controls.
        instances: The training instances: the params each episode passes to the objective
            (``{"seed": 3}``), taken in turn.
        held_out: Instances the trained policy is evaluated on (greedy) after training.
        episodes: Training episodes.
        batch: Episodes per policy update.
        algorithm: ``"reinforce"`` or ``"ppo"``.
        trainer: :class:`PolicyTrainer` options (``lr``, ``entropy``, ``baseline_decay``,
            ``epochs``, ``clip``).
        policy: :class:`Policy` options (``features``, ``hidden``, ``levels``,
            ``hold_bias``).
        seed: Seeds the policy's initialisation and its draws.
        runner: Where episodes run.
        budget: Per-episode rules (``trial_timeout``, ``max_retries``,
            ``max_failures_in_a_row``); the trial count is set by ``episodes``.
        policy_path: Where the policy is written after each update.
        start_from: A saved policy to continue training (``None``: a fresh one).
        evaluate_static: Also run the held-out instances with the parameter held (the
            static reference of the paired comparison).
        fail_reward: The reward of an episode the objective failed under the policy (a
            divergence), or ``None``: the worst reward of the run's completed episodes so far
            (before any, a failed episode is not learned from).
    """

    study: StudyConfig
    objective: ObjectiveRef
    param: DynamicParam
    instances: tuple[Mapping[str, Any], ...]
    held_out: tuple[Mapping[str, Any], ...] = ()
    episodes: int
    batch: int = 8
    algorithm: str = "ppo"
    trainer: Mapping[str, Any] = field(default_factory=dict)
    policy: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    runner: RunnerSettings
    budget: Budget = field(default_factory=Budget)
    policy_path: Path
    start_from: PolicySnapshot | None = None
    evaluate_static: bool = True
    fail_reward: float | None = None

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(
                f"algorithm must be one of {', '.join(ALGORITHMS)}, but got {self.algorithm!r}.",
                path=("algorithm",),
            )
        if self.study.space is None:
            raise ConfigError(
                "a DAC plan's study needs its space: give StudyConfig(space=dac_space(...)).",
                path=("study", "space"),
            )
        if self.start_from is not None and self.start_from.param != self.param:
            raise ConfigError(
                f"the policy to start from controls {self.start_from.param.to_dict()}, but the "
                f"objective's dynamic parameter is {self.param.to_dict()}; train a fresh policy "
                "or give the objective the policy's parameter.",
                path=("start_from",),
            )
        if not self.instances:
            raise ConfigError(
                "a DAC run needs at least one training instance.", path=("instances",)
            )
        if self.episodes < 1 or self.batch < 1:
            raise ConfigError(
                f"`episodes >= 1` and `batch >= 1` must hold, but got episodes={self.episodes}, "
                f"batch={self.batch}.",
                path=("episodes",),
            )
        if len(self.study.metrics) != 1:
            raise ConfigError(
                f"a DAC run rewards one metric, but the study has {len(self.study.metrics)}.",
                path=("objective", "metrics"),
            )

    def fingerprint(self) -> dict[str, Any]:
        """What a continued run must share with the run it continues: the controlled
        parameter, the instances (an episode's ``instance`` indexes them), the algorithm and
        the policy's form."""
        return {
            "param": self.param.to_dict(),
            "instances": [dict(i) for i in self.instances],
            "held_out": [dict(i) for i in self.held_out],
            "algorithm": self.algorithm,
            "policy": dict(self.policy),
        }

    @property
    def all_instances(self) -> tuple[Mapping[str, Any], ...]:
        """Training instances then held-out ones: a trial's ``instance`` indexes this."""
        return (*self.instances, *self.held_out)

    def new_policy(self) -> Policy:
        if self.start_from is not None:
            return Policy.from_snapshot(self.start_from)
        return Policy(self.param, seed=self.seed, **dict(self.policy))

    def new_trainer(self, policy: Policy) -> PolicyTrainer:
        return PolicyTrainer(policy, algorithm=self.algorithm, **dict(self.trainer))  # type: ignore[arg-type]


@dataclass
class DACResult:
    """What a DAC run left: the study, the policy, each update's statistics, and the
    held-out evaluation: ``evaluation[i]`` is ``{"policy": metric, "static": metric}`` of
    held-out instance ``i`` (where run)."""

    store: TrialsStore
    policy: Policy
    policy_path: Path
    updates: list[dict[str, float]]
    evaluation: list[dict[str, float]]
    seconds: float
    interrupted: bool = False


def dac_space(n_episodes: int, n_instances: int, n_held_out: int = 0) -> Any:
    """The study's space: the episode's number and the instance's index (both queued by the
    trainer, never sampled); the held-out evaluations (policy and static) and instances come
    after the training ones.

    Args:
        n_episodes: Training episodes.
        n_instances: Training instances.
        n_held_out: Held-out instances."""
    from paretune.spaces import Int, SearchSpace

    return SearchSpace(
        [
            Int(EPISODE, low=0, high=max(1, n_episodes + 2 * n_held_out - 1)),
            Int(INSTANCE, low=0, high=max(1, n_instances + n_held_out - 1)),
        ]
    )


def episode_rewards(trajectory: Sequence[Mapping[str, Any]], reward: float) -> list[dict[str, Any]]:
    """The trajectory with each interval's reward: 0, and the episode's reward (its final
    metric, signed so that higher is better) on the last decision (a sparse reward)."""
    out = [dict(d) for d in trajectory]
    for i, d in enumerate(out):
        d["reward"] = reward if i == len(out) - 1 else 0.0
    return out


class DACTrials(StudyTrials):
    """The trials of a DAC run: episodes queued in turn over the instances, each started with
    the policy as it is then, and the policy updated every ``batch`` finished episodes."""

    def __init__(self, store: TrialsStore, plan: DACPlan, **kwargs: Any) -> None:
        super().__init__(store, plan.objective, **kwargs)
        self.plan = plan
        self.sign = -1.0 if plan.study.metrics[0].direction == "minimize" else 1.0
        self.metric = plan.study.metrics[0].name
        self.updates: list[dict[str, float]] = []
        self.phase = "train"  # "train": sampled decisions and updates; "eval": greedy
        # (episode number, held-out index, label) still to queue
        self.eval_queue: list[tuple[int, int, str]] = []
        state = store.study.user_attrs.get(DAC_ATTR)
        if state is not None:
            check_fingerprint(state.get("config"), plan.fingerprint(), store.config.name)
            self.policy = Policy.from_snapshot(PolicySnapshot.from_dict(state["policy"]))
            self.trainer = plan.new_trainer(self.policy)
            self.trainer.restore(state.get("trainer", {}))
            self.consumed: set[int] = set(state.get("consumed", []))
            self.updates = list(state.get("updates", []))
        else:
            self.policy = plan.new_policy()
            self.trainer = plan.new_trainer(self.policy)
            self.consumed = set()
        self.buffer: list[tuple[int, Episode]] = []
        self._refill_buffer()

    def stop_policy(self, budget: Budget) -> StopPolicy:
        """The budget counts training episodes only (a held-out evaluation is not one, so a
        finished run continued with more episodes trains that many more)."""
        return StopPolicy(
            budget,
            finished=lambda: self.store.n_finished(
                running=True, where=lambda t: LABEL_ATTR not in t.user_attrs
            ),
        )

    # -- the queue ----------------------------------------------------------------------------

    def _trials(self) -> list[FrozenTrial]:
        return self.store.study.get_trials(deepcopy=False)

    def _refill_buffer(self) -> None:
        """Episodes finished but not learned from yet (a resumed run's)."""
        for t in self._trials():
            if t.number in self.consumed or t.user_attrs.get(LABEL_ATTR):
                continue
            episode = self._episode(t)
            if episode is not None:
                self.buffer.append((t.number, episode))

    def prepare_queue(self) -> bool:
        """Queue the next training episode (its number and instance), or in the evaluation
        phase the next held-out run; ``False`` when none is left."""
        from optuna.trial import TrialState

        study = self.store.study
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not waiting:
            if self.phase == "train":
                done = [
                    t.params.get(EPISODE, t.system_attrs.get("fixed_params", {}).get(EPISODE))
                    for t in self._trials()
                    if not t.user_attrs.get(LABEL_ATTR)
                ]
                episode = 1 + max((e for e in done if e is not None), default=-1)
                instance = episode % len(self.plan.instances)
                study.enqueue_trial({EPISODE: episode, INSTANCE: instance})
            elif self.eval_queue:
                number, index, label = self.eval_queue.pop(0)
                study.enqueue_trial(
                    {EPISODE: number, INSTANCE: len(self.plan.instances) + index},
                    user_attrs={LABEL_ATTR: label, UPDATES_ATTR: self.policy.updates},
                )
            else:
                return False
        return True

    def started(self, pending: PendingTrial) -> Started:
        # An episode is never a copy of another with the same params: its policy (a newer
        # snapshot, sampled actions) differs, so it is always run.
        return super().started(dataclasses.replace(pending, duplicate_of=None))

    def job(self, pending: PendingTrial) -> Job:
        job = super().job(pending)
        instance = self.plan.all_instances[int(pending.params[INSTANCE])]
        if pending.trial.user_attrs.get(LABEL_ATTR) is not None:
            # An evaluation records the policy it ran (a retry may run a newer one).
            pending.trial.set_user_attr(UPDATES_ATTR, self.policy.updates)
        return dataclasses.replace(job, params=dict(instance))

    def decider_for(self, pending: PendingTrial) -> DeciderRef | None:
        label = pending.trial.user_attrs.get(LABEL_ATTR)
        if label is not None and str(label).startswith(STATIC_LABEL):
            return None  # held at its initial value
        greedy = label is not None
        return PolicyDecider(self.policy.snapshot(), greedy=greedy, seed=self.plan.seed)

    # -- learning -----------------------------------------------------------------------------

    def _reward(self, metrics: Mapping[str, float] | None) -> float | None:
        if metrics is None or self.metric not in metrics:
            return None
        value = float(metrics[self.metric])
        return self.sign * value if math.isfinite(value) else None

    def _episode(self, t: FrozenTrial) -> Episode | None:
        from optuna.trial import TrialState

        trajectory = t.user_attrs.get(TRAJECTORY_ATTR)
        if not trajectory or t.state not in (TrialState.COMPLETE, TrialState.FAIL):
            return None
        if t.state == TrialState.FAIL and t.user_attrs.get(INTERRUPTED_ATTR):
            return None  # not the policy's doing
        rewards = [d.get("reward") for d in trajectory]
        reward = rewards[-1] if rewards and rewards[-1] is not None else None
        if reward is None:
            return None
        decisions = tuple(Decision.from_dict(d) for d in trajectory)
        return Episode(
            decisions,
            float(reward),
            instance=str(t.params.get(INSTANCE)),
            failed=t.state == TrialState.FAIL,
        )

    def fail_reward(self) -> float | None:
        """The reward of a failed episode: the plan's, else the worst reward of the run's
        completed training episodes (read from the study, so a resumed run scores the same)."""
        if self.plan.fail_reward is not None:
            return self.plan.fail_reward
        from optuna.trial import TrialState

        rewards = [
            self._reward(t.user_attrs.get(METRICS_ATTR))
            for t in self.store.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if LABEL_ATTR not in t.user_attrs
        ]
        known = [r for r in rewards if r is not None]
        return min(known) if known else None

    def finish(self, started: Started, outcome: Outcome) -> FrozenTrial:
        label = started.token.trial.user_attrs.get(LABEL_ATTR)
        if outcome.trajectory and label is None:
            reward = self._reward(outcome.metrics) if outcome.state == "COMPLETE" else None
            if reward is None and outcome.state == "FAIL" and not outcome.lost:
                # The policy drove the run into a failure (a divergence): it learns to avoid
                # that as it would the worst completed run (fail_reward).
                reward = self.fail_reward()
            if reward is not None:
                outcome = dataclasses.replace(
                    outcome, trajectory=episode_rewards(outcome.trajectory, reward)
                )
        frozen = super().finish(started, outcome)
        if label is None and frozen.number not in self.consumed:
            episode = self._episode(frozen)
            if episode is not None:
                self.buffer.append((frozen.number, episode))
            if len(self.buffer) >= self.plan.batch:
                self.learn()
        return frozen

    def learn(self) -> None:
        """Update the policy from the buffered episodes and save it everywhere."""
        batch = sorted(self.buffer)
        stats = self.trainer.update([e for _, e in batch])
        stats["min_reward"] = min(e.reward for _, e in batch)
        stats["update"] = float(self.policy.updates)
        self.consumed.update(n for n, _ in batch)
        self.buffer = []
        self.updates.append(stats)
        self.save()
        _log.info(
            "policy update %d: mean reward %.4f over %d episodes, entropy %.3f",
            self.policy.updates,
            stats.get("reward", math.nan),
            len(batch),
            stats.get("entropy", math.nan),
        )

    def save(self) -> None:
        """The study first (the record a resumed run continues from), then the file and
        the MLflow artifact."""
        snapshot = self.policy.snapshot()
        self.store.study.set_user_attr(
            DAC_ATTR,
            {
                "config": self.plan.fingerprint(),
                "policy": snapshot.to_dict(),
                "trainer": self.trainer.state(),
                "consumed": sorted(self.consumed),
                "updates": self.updates,
            },
        )
        self.policy.save(self.plan.policy_path)
        store = self.store
        if store.mlflow is not None and store.parent_run_id is not None:
            try:
                store.mlflow.log_artifact(store.parent_run_id, str(self.plan.policy_path), "policy")
                stats = self.updates[-1] if self.updates else {}
                store.mlflow.log_metrics(
                    store.parent_run_id,
                    {f"dac.{k}": v for k, v in stats.items() if k != "update"},
                    step=self.policy.updates,
                )
            except Exception as err:  # tracking is best effort; the study holds the policy
                _log.warning("MLflow: the policy was not logged: %s", err)


def run_dac(
    plan: DACPlan,
    *,
    resume: bool = False,
    progress: Any = None,
    on_start: Callable[[TrialsStore, list[int]], None] | None = None,
) -> DACResult:
    """Train a policy (see the module docstring), then evaluate it on the held-out instances.

    Args:
        plan: The run.
        resume: Require the study to exist already (a stopped run continued).
        progress: Called as ``progress.update(store, frozen_trial)`` after each episode.
        on_start: Called with the store once it is open and recovered.

    Returns:
        The result; ``interrupted`` is set if it was stopped by Ctrl-C/SIGTERM.
    """
    from paretune.search._controllers import ControllerContext, make_sampler
    from paretune.trials_store import TrialsStore

    t0 = time.monotonic()
    runner = make_runner(plan.runner)
    runner.check(metrics=plan.study.metric_names, pruning=False, budget=plan.budget)
    store = TrialsStore(plan.study, create=not resume)
    assert plan.study.space is not None  # DACPlan checks it
    # Every trial is queued by the trainer; the sampler only fills what a queue leaves out.
    store.study.sampler = make_sampler(
        "random",
        ControllerContext(space=plan.study.space, metrics=plan.study.metrics, seed=plan.seed),
        {},
    )
    status, interrupted = "FAILED", False
    trials: DACTrials | None = None
    try:
        claim_driver(store)
        recovered = store.start()
        if on_start is not None:
            on_start(store, recovered)
        trials = DACTrials(store, plan, progress=progress)
        train_budget = dataclasses.replace(plan.budget, trials=plan.episodes)
        runner.run(trials, train_budget)
        if trials.buffer:  # the last, partial batch
            trials.learn()
        if plan.held_out:
            trials.phase = "eval"
            # A policy's evaluation is redone after more training; the static one once.
            updates = trials.policy.updates
            done = {
                str(t.user_attrs.get(LABEL_ATTR))
                for t in store.study.get_trials(deepcopy=False)
                if t.user_attrs.get(LABEL_ATTR)
                and t.state.is_finished()
                and (
                    str(t.user_attrs[LABEL_ATTR]).startswith(STATIC_LABEL)
                    or t.user_attrs.get(UPDATES_ATTR) == updates
                )
            }
            n = len(plan.held_out)
            # Each evaluation has its own episode number: equal params would be copied.
            labels = [(plan.episodes + i, i, f"{EVAL_LABEL} {i}") for i in range(n)]
            if plan.evaluate_static:
                labels += [(plan.episodes + n + i, i, f"{STATIC_LABEL} {i}") for i in range(n)]
            trials.eval_queue = [item for item in labels if item[2] not in done]
            runner.run(trials, dataclasses.replace(plan.budget, trials=None, wall_time=None))
        status = "FINISHED"
    except SearchInterrupted:
        interrupted, status = True, "KILLED"
    finally:
        store.close(status=status)
    policy = trials.policy if trials is not None else plan.new_policy()
    return DACResult(
        store=store,
        policy=policy,
        policy_path=plan.policy_path,
        updates=trials.updates if trials is not None else [],
        evaluation=held_out_results(store, len(plan.held_out), plan.study.metrics[0].name),
        seconds=time.monotonic() - t0,
        interrupted=interrupted,
    )


def claim_driver(store: TrialsStore) -> None:
    """Make this process the study's one DAC driver (the policy lives in its memory between
    updates; two drivers would each learn from the other's episodes or overwrite its
    policy). More workers come from the runner (``n_jobs``, Ray), not more drivers.

    Raises:
        StudyError: A live process of this machine drives the study; a driver on another
            machine is only warned about (this one cannot see whether it runs).
    """
    from paretune.trials_store import owner_is_dead, owner_token

    mine = owner_token()
    claim = store.study.user_attrs.get(DRIVER_ATTR)
    if claim and claim != mine:
        host = str(claim).split(":", 1)[0]
        if host == socket.gethostname() and not owner_is_dead(str(claim)):
            raise StudyError(
                f"study {store.config.name!r} is being trained by another live process "
                f"({claim}); one DAC run drives a study (add workers with runner.n_jobs or "
                "Ray). Wait for it, or stop it first."
            )
        if host != socket.gethostname():
            _log.warning(
                "study %s was last driven from %s; if that run still goes on, stop one of "
                "the two: a DAC study has one driver",
                store.config.name,
                host,
            )
    store.study.set_user_attr(DRIVER_ATTR, mine)


def check_fingerprint(stored: Any, current: Mapping[str, Any], study: str) -> None:
    """Refuse to continue a DAC study with another parameter, instances, algorithm or policy.

    Raises:
        ConfigError: The spec changed one of them; the message names it.
    """
    if not isinstance(stored, Mapping):
        return
    for key, value in current.items():
        if key in stored and stored[key] != value:
            raise ConfigError(
                f"study {study!r} was trained with another `{key}` ({stored[key]!r}; now "
                f"{value!r}): its episodes and policy belong to that one. Keep it, or name a "
                "new study.",
                path=("dac", key),
            )


def held_out_results(store: TrialsStore, n: int, metric: str) -> list[dict[str, float]]:
    """``[{"policy": value, "static": value}]`` per held-out instance, from the labelled
    trials of a DAC study (missing where not run; the latest where run more than once)."""
    from optuna.trial import TrialState

    out: list[dict[str, float]] = [{} for _ in range(n)]
    complete = store.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    for t in sorted(complete, key=lambda t: t.number):
        label = str(t.user_attrs.get(LABEL_ATTR) or "")
        kind, _, index = label.partition(" ")
        if kind in (EVAL_LABEL, STATIC_LABEL) and index.isdigit() and int(index) < n:
            value = t.user_attrs.get(METRICS_ATTR, {}).get(metric)
            if value is not None:
                out[int(index)]["policy" if kind == EVAL_LABEL else "static"] = float(value)
    return out
