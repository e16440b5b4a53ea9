"""The policy: one categorical distribution per parameter, and its Adam update."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from paretune.search._reinforce.levels import Levels
from paretune.spaces import SearchSpace

# Adam's usual moment decays; the learning rate is the sampler's option.
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


class Policy:
    """Independent categoricals over the levels of each parameter, as logits.

    ``pi(params) = prod_j softmax(logits_j)[a_j]`` over the parameters ``j`` active in
    ``params``: a conditional parameter is drawn only when its condition holds, and only then
    does its factor count in the log-probability and the entropy. The logits start at zero
    (uniform) and follow Adam's ascent on the REINFORCE objective (:meth:`step`).

    Args:
        space: The space (declaration order, conditions).
        levels: The levels of each parameter of ``space``, by name.
    """

    def __init__(self, space: SearchSpace, levels: Mapping[str, Levels]) -> None:
        self.space = space
        self.levels = dict(levels)
        self.logits = {name: np.zeros(len(lv)) for name, lv in self.levels.items()}
        self._m = {name: np.zeros(len(lv)) for name, lv in self.levels.items()}
        self._v = {name: np.zeros(len(lv)) for name, lv in self.levels.items()}
        # Per factor: a conditional parameter's moments move only with the trials holding it.
        self._t = dict.fromkeys(self.levels, 0)

    def probabilities(self, name: str) -> np.ndarray:
        """The probabilities of the levels of parameter ``name`` (``k`` for ``k`` levels)."""
        z = self.logits[name]
        e = np.exp(z - z.max())
        return e / e.sum()

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draw params in declaration order: every parameter active under the earlier draws,
        one uniform number per parameter of the space whether active or not (so that one
        parameter's draw does not shift the others')."""
        values: dict[str, Any] = {}
        for param in self.space:
            u = rng.random()
            if param.name not in self.levels or not self.space.is_active(param.name, values):
                continue
            cdf = np.cumsum(self.probabilities(param.name))
            k = min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), len(cdf) - 1)
            values[param.name] = self.levels[param.name].values[k]
        return values

    def actions(self, params: Mapping[str, Any]) -> dict[str, int]:
        """The level of each parameter that ``params`` holds (and the policy has): the
        actions whose log-probability a trial's update counts."""
        out = {}
        for name, value in params.items():
            levels = self.levels.get(name)
            if levels is not None:
                k = levels.index(value)
                if k is not None:
                    out[name] = k
        return out

    def entropy(self, names: Sequence[str] | None = None) -> float:
        """The summed entropy (nats) of the factors ``names`` (default: all)."""
        total = 0.0
        for name in self.levels if names is None else names:
            p = self.probabilities(name)
            total -= float(np.sum(p * np.log(np.maximum(p, 1e-300))))
        return total

    def step(
        self, actions: Mapping[str, int], advantage: float, *, lr: float, entropy: float
    ) -> None:
        """One Adam ascent step on ``advantage * log pi(actions) + entropy * H`` over the
        factors of ``actions`` (the parameters the trial held).

        The gradient of ``log softmax(z)[a]`` is ``onehot(a) - p``; that of the entropy
        ``H = -sum p log p`` is ``-p (log p + H)``.
        """
        for name, a in actions.items():
            self._t[name] += 1
            c1, c2 = 1.0 - _BETA1 ** self._t[name], 1.0 - _BETA2 ** self._t[name]
            p = self.probabilities(name)
            log_p = np.log(np.maximum(p, 1e-300))
            grad = -advantage * p
            grad[a] += advantage
            grad -= entropy * p * (log_p + float(-np.sum(p * log_p)))
            m, v = self._m[name], self._v[name]
            m *= _BETA1
            m += (1.0 - _BETA1) * grad
            v *= _BETA2
            v += (1.0 - _BETA2) * grad * grad
            self.logits[name] += lr * (m / c1) / (np.sqrt(v / c2) + _EPS)

    def log_probability(self, actions: Mapping[str, int]) -> float:
        """``log pi`` of the levels ``actions`` (only the factors they name)."""
        return float(sum(math.log(self.probabilities(n)[a]) for n, a in actions.items()))
