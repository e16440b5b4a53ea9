"""Policy-gradient updates of a :class:`~paretune.search.dac.Policy` from finished episodes:
REINFORCE (ENAS: moving-average baseline, entropy bonus) and PPO (clipped surrogate)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from paretune._errors import ConfigError
from paretune.search.dac._policy import Policy
from paretune.spaces.dynamic import FEATURES, Decision

__all__ = ["ALGORITHMS", "Episode", "PolicyTrainer"]

Algorithm = Literal["reinforce", "ppo"]
ALGORITHMS: tuple[str, ...] = ("reinforce", "ppo")


@dataclass(frozen=True)
class Episode:
    """One finished run under a policy, as an update reads it.

    Attributes:
        decisions: Its decisions in order; each action is an index of the policy's actions
            and carries the log-probability it was taken with.
        reward: The episode's return, higher is better (the final metric, signed by its
            direction): a sparse reward credited to every decision of the episode.
        instance: The instance it ran on (per-instance baselines compare like with like).
        failed: The run failed under the policy (a divergence) and ``reward`` is the failure's
            penalty: it teaches the policy, but moves no baseline.
    """

    decisions: tuple[Decision, ...]
    reward: float
    instance: str = ""
    failed: bool = False


@dataclass
class PolicyTrainer:
    """Updates a policy from batches of episodes.

    Both algorithms give every decision of an episode the advantage ``reward - baseline``,
    where the baseline is a moving average of the rewards of earlier episodes *on the same
    instance* (``baseline_decay``; ENAS uses one average; instances that differ in difficulty,
    such as seeds of a training run, make a shared one mostly noise). Before an instance has
    a baseline, the batch's mean reward on it stands in where the batch holds two or more of
    its episodes, else the batch's mean reward. Failed episodes' penalties move no baseline.
    Advantages are divided by the batch's standard deviation.

    * ``reinforce``: one gradient step on ``-mean(w * A * log pi(a|s)) - entropy * H``, where
      ``w = min(pi(a|s) / pi_old(a|s), 2)`` corrects for episodes that an older snapshot ran
      (asynchronous workers; ``w = 1`` on-policy).
    * ``ppo``: ``epochs`` full-batch steps on the clipped surrogate
      ``-mean(min(r A, clip(r, 1 - clip, 1 + clip) A)) - entropy * H`` with
      ``r = pi(a|s) / pi_old(a|s)``, where ``pi_old`` is the snapshot that took the action
      (recorded in the trajectory), so episodes run by an older snapshot (asynchronous
      workers) are weighted correctly. There is no value network: the advantage is the same
      baseline-relative return as REINFORCE's.

    The first update sets the policy's feature normalisation from the states it sees and keeps
    it from then on.

    Args:
        policy: The policy to train (updated in place).
        algorithm: ``"reinforce"`` or ``"ppo"``.
        lr: Adam's learning rate.
        entropy: The entropy bonus's coefficient.
        baseline_decay: The moving-average baseline's decay.
        epochs: PPO's steps per batch.
        clip: PPO's ratio clip.
    """

    policy: Policy
    algorithm: Algorithm = "reinforce"
    lr: float = 0.05
    entropy: float = 0.01
    baseline_decay: float = 0.9
    epochs: int = 4
    clip: float = 0.2
    baselines: dict[str, float] = field(default_factory=dict)
    _optimizer: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(
                f"algorithm must be one of {', '.join(ALGORITHMS)}, but got {self.algorithm!r}.",
                path=("algorithm",),
            )
        for name, ok in (
            ("lr", self.lr > 0),
            ("entropy", self.entropy >= 0),
            ("baseline_decay", 0 <= self.baseline_decay < 1),
            ("epochs", self.epochs >= 1),
            ("clip", self.clip > 0),
        ):
            if not ok:
                rule = {
                    "lr": "lr > 0",
                    "entropy": "entropy >= 0",
                    "baseline_decay": "0 <= baseline_decay < 1",
                    "epochs": "epochs >= 1",
                    "clip": "clip > 0",
                }[name]
                raise ConfigError(
                    f"`{rule}` must hold, but got {name}={getattr(self, name)!r}.",
                    path=("trainer", name),
                )

    def advantages(self, episodes: Sequence[Episode]) -> np.ndarray:
        """Each episode's advantage (and the baselines moved past the batch)."""
        rewards = np.array([e.reward for e in episodes], dtype=np.float64)
        succeeded = [e.reward for e in episodes if not e.failed]
        batch_mean = float(np.mean(succeeded)) if succeeded else float(np.mean(rewards))
        by_instance: dict[str, list[float]] = {}
        for e in episodes:
            if not e.failed:
                by_instance.setdefault(e.instance, []).append(e.reward)

        def fallback(instance: str) -> float:
            own = by_instance.get(instance, [])
            return float(np.mean(own)) if len(own) >= 2 else batch_mean

        base = np.array([self.baselines.get(e.instance, fallback(e.instance)) for e in episodes])
        adv = rewards - base
        if len(adv) > 1 and adv.std() > 0:
            adv = adv / adv.std()
        for e in episodes:
            if e.failed:
                continue
            old = self.baselines.get(e.instance, fallback(e.instance))
            self.baselines[e.instance] = (
                self.baseline_decay * old + (1 - self.baseline_decay) * e.reward
            )
        return adv

    def update(self, episodes: Sequence[Episode]) -> dict[str, float]:
        """One update from ``episodes``; statistics of it (loss, entropy, mean reward).

        Raises:
            ValueError: An episode has no decisions, or a decision has no action index.
        """
        import torch

        episodes = [e for e in episodes if e.decisions]
        if not episodes:
            return {}
        policy = self.policy
        states = [d.state for e in episodes for d in e.decisions]
        if policy.updates == 0:
            index = [FEATURES.index(f) for f in policy.features]
            raw = np.array([[s.features()[i] for i in index] for s in states])
            policy.mean = raw.mean(axis=0)
            policy.scale = np.maximum(raw.std(axis=0), 1e-2)
        actions = []
        old = []
        for e in episodes:
            for d in e.decisions:
                if d.action is None or int(d.action) != d.action:
                    raise ValueError(f"a decision without an action index: {d}")
                actions.append(int(d.action))
                old.append(d.log_prob if d.log_prob is not None else math.nan)
        adv_per_episode = self.advantages(episodes)
        adv = torch.tensor(
            [a for a, e in zip(adv_per_episode, episodes, strict=True) for _ in e.decisions],
            dtype=torch.float32,
        )
        x = policy.inputs(states)
        a = torch.tensor(actions)
        old_logp = torch.tensor(old, dtype=torch.float32)
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam(policy.net.parameters(), lr=self.lr)
        steps = self.epochs if self.algorithm == "ppo" else 1
        stats: dict[str, float] = {}
        for _ in range(steps):
            logits = policy.net(x)
            logp_all = torch.log_softmax(logits, dim=1)
            logp = logp_all.gather(1, a[:, None])[:, 0]
            entropy = -(logp_all.exp() * logp_all).sum(dim=1).mean()
            if self.algorithm == "ppo":
                reference = torch.where(torch.isnan(old_logp), logp.detach(), old_logp)
                ratio = torch.exp(logp - reference)
                surrogate = torch.minimum(
                    ratio * adv, torch.clamp(ratio, 1 - self.clip, 1 + self.clip) * adv
                )
                loss = -surrogate.mean() - self.entropy * entropy
            else:
                # Episodes of an older snapshot are weighted by the ratio of the action's
                # probabilities, capped so that one stale episode cannot dominate.
                known = ~torch.isnan(old_logp)
                ratio = torch.ones_like(logp)
                ratio[known] = torch.exp(logp.detach()[known] - old_logp[known]).clamp(max=2.0)
                loss = -(ratio * adv * logp).mean() - self.entropy * entropy
            self._optimizer.zero_grad()
            loss.backward()
            self._optimizer.step()
            stats = {"loss": float(loss.detach()), "entropy": float(entropy.detach())}
        policy.updates += 1
        stats["reward"] = float(np.mean([e.reward for e in episodes]))
        stats["episodes"] = float(len(episodes))
        return stats

    def state(self) -> dict[str, Any]:
        """The trainer's own state besides the policy (its baselines), as plain data."""
        return {"baselines": dict(self.baselines)}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state` (Adam's moments start afresh)."""
        self.baselines = {str(k): float(v) for k, v in state.get("baselines", {}).items()}
