"""The policy a DAC trainer learns: state features in, a distribution over actions out."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from paretune._errors import ConfigError, describe
from paretune.spaces.dynamic import FEATURES, DecisionState, DynamicParam, dynamic_param_from_dict

if TYPE_CHECKING:
    import torch

__all__ = ["Policy", "PolicySnapshot", "load_policy"]

_FORMAT = "paretune.dac.policy/1"


@dataclass(frozen=True)
class PolicySnapshot:
    """A policy as plain data: what a trial's worker gets, what is saved and logged.

    Attributes:
        param: The dynamic parameter it controls.
        features: The state features it reads, a subset of
            :data:`~paretune.spaces.dynamic.FEATURES`.
        hidden: Units of its hidden layer (0: a linear policy).
        levels: For a continuous parameter, the values it chooses among (a log or linear grid
            over ``[low, high]``); empty for discrete actions.
        mean: Per-feature offsets subtracted before the network (observation normalisation).
        scale: Per-feature divisors.
        weights: The network's tensors by name, as nested lists.
        updates: How many updates trained it.
    """

    param: DynamicParam
    features: tuple[str, ...]
    hidden: int
    levels: tuple[float, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: Mapping[str, Any]
    updates: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "param": self.param.to_dict(),
            "features": list(self.features),
            "hidden": self.hidden,
            "levels": list(self.levels),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "weights": dict(self.weights),
            "updates": self.updates,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicySnapshot:
        """Read :meth:`to_dict`'s form.

        Raises:
            ConfigError: It is not a saved paretune policy.
        """
        if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
            raise ConfigError(
                f"not a saved paretune policy (expected format {_FORMAT!r}, got "
                f"{describe(data.get('format') if isinstance(data, Mapping) else data)})."
            )
        return cls(
            param=dynamic_param_from_dict(data["param"]),
            features=tuple(data["features"]),
            hidden=int(data["hidden"]),
            levels=tuple(float(v) for v in data["levels"]),
            mean=tuple(float(v) for v in data["mean"]),
            scale=tuple(float(v) for v in data["scale"]),
            weights=dict(data["weights"]),
            updates=int(data.get("updates", 0)),
        )


class Policy:
    """A small network from a decision's state features to a categorical distribution over
    the dynamic parameter's actions (a discrete parameter's ``actions``, or ``levels`` values
    of a continuous one, log-spaced where it is on a log scale).

    The features are normalised by fixed offsets and divisors, which the trainer sets from the
    states of its first episodes and then keeps (so a saved policy acts the same everywhere).
    The last layer starts at zero with the hold action (scale by 1, where there is one) given
    ``hold_bias`` more logit, so a fresh policy mostly holds and explores around that.

    Args:
        param: The dynamic parameter it controls.
        features: The state features it reads (default: all of
            :data:`~paretune.spaces.dynamic.FEATURES`).
        hidden: Hidden units (0: linear in the features).
        levels: Values of a continuous parameter to choose among.
        hold_bias: The hold action's initial extra logit.
        seed: Seeds the hidden layer's initialisation.
    """

    def __init__(
        self,
        param: DynamicParam,
        *,
        features: Sequence[str] | None = None,
        hidden: int = 16,
        levels: int = 9,
        hold_bias: float = 1.0,
        seed: int = 0,
    ) -> None:
        import torch

        names = tuple(FEATURES if features is None else features)
        unknown = [f for f in names if f not in FEATURES]
        if unknown or not names:
            raise ConfigError(
                f"policy features are among {', '.join(FEATURES)}, but got {list(names)}.",
                path=("policy", "features"),
            )
        if hidden < 0:
            raise ConfigError(
                f"`hidden >= 0` must hold, but got hidden={hidden}.", path=("policy", "hidden")
            )
        self.param = param
        self.features = names
        self.hidden = hidden
        if param.discrete:
            self.levels: tuple[float, ...] = ()
        else:
            if levels < 2:
                raise ConfigError(
                    f"`levels >= 2` must hold, but got levels={levels}.",
                    path=("policy", "levels"),
                )
            grid = (
                np.geomspace(param.low, param.high, levels)
                if param.log
                else np.linspace(param.low, param.high, levels)
            )
            self.levels = tuple(float(v) for v in grid)
        self.n_actions = param.n_actions or len(self.levels)
        self.mean = np.zeros(len(names))
        self.scale = np.ones(len(names))
        self.updates = 0
        generator = torch.Generator().manual_seed(seed)
        self.net = _network(len(names), hidden, self.n_actions, generator)
        hold = param.hold_action()
        with torch.no_grad():
            last = self.net[-1]
            assert isinstance(last, torch.nn.Linear)  # the network ends in a linear layer
            last.weight.zero_()
            last.bias.zero_()
            if hold is not None:
                last.bias[hold] = hold_bias

    # -- acting -------------------------------------------------------------------------

    def inputs(self, states: Sequence[DecisionState]) -> torch.Tensor:
        """The normalised features of ``states``, `n x features`."""
        import torch

        index = [FEATURES.index(f) for f in self.features]
        raw = np.array([[s.features()[i] for i in index] for s in states], dtype=np.float64)
        return torch.as_tensor((raw - self.mean) / self.scale, dtype=torch.float32)

    def probabilities(self, state: DecisionState) -> np.ndarray:
        """The action probabilities in ``state``."""
        import torch

        with torch.no_grad():
            logits = self.net(self.inputs([state]))[0]
            return torch.softmax(logits.double(), dim=0).numpy()

    def act(
        self, state: DecisionState, *, rng: np.random.Generator | None = None
    ) -> tuple[int, float, float]:
        """``(action index, new value, log-probability)`` in ``state``: sampled with ``rng``,
        or the most probable action without one (greedy, deterministic)."""
        p = self.probabilities(state)
        index = int(np.argmax(p)) if rng is None else int(rng.choice(len(p), p=p / p.sum()))
        return index, self.value_after(state.value, index), float(math.log(max(p[index], 1e-300)))

    def value_after(self, current: float, index: int) -> float:
        """The parameter's value after action ``index`` from ``current``."""
        if self.param.discrete:
            return self.param.apply(current, index)
        return self.param.clip(self.levels[index])

    # -- plain data -------------------------------------------------------------------------

    def snapshot(self) -> PolicySnapshot:
        weights = {k: v.detach().cpu().tolist() for k, v in self.net.state_dict().items()}
        return PolicySnapshot(
            param=self.param,
            features=self.features,
            hidden=self.hidden,
            levels=self.levels,
            mean=tuple(float(v) for v in self.mean),
            scale=tuple(float(v) for v in self.scale),
            weights=weights,
            updates=self.updates,
        )

    @classmethod
    def from_snapshot(cls, snapshot: PolicySnapshot) -> Policy:
        import torch

        policy = cls(
            snapshot.param,
            features=snapshot.features,
            hidden=snapshot.hidden,
            levels=max(2, len(snapshot.levels)),
        )
        policy.levels = snapshot.levels
        policy.mean = np.array(snapshot.mean)
        policy.scale = np.array(snapshot.scale)
        policy.updates = snapshot.updates
        policy.net.load_state_dict(
            {k: torch.tensor(v, dtype=torch.float32) for k, v in snapshot.weights.items()}
        )
        return policy

    def save(self, path: str | Path) -> Path:
        """Write the policy as JSON (atomically); :func:`load_policy` reads it back."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.snapshot().to_dict()))
        tmp.replace(path)
        return path

    def __repr__(self) -> str:
        actions = self.param.actions if self.param.discrete else f"{len(self.levels)} levels"
        return (
            f"Policy({self.param.name}, actions={actions}, features={list(self.features)}, "
            f"hidden={self.hidden}, updates={self.updates})"
        )


def load_policy(source: str | Path | Mapping[str, Any]) -> Policy:
    """A saved policy: a JSON file written by :meth:`Policy.save`, an MLflow artifact URI
    (``runs:/<run_id>/policy/policy.json``, ``mlflow-artifacts:/...``), or the dict itself.

    Raises:
        ConfigError: The file does not exist or is not a saved policy.
    """
    if isinstance(source, Mapping):
        return Policy.from_snapshot(PolicySnapshot.from_dict(source))
    text = str(source)
    if "://" in text or text.startswith(("runs:/", "models:/")):
        import mlflow.artifacts

        data = mlflow.artifacts.load_dict(text)
    else:
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"no saved policy at {str(path)!r}: the file does not exist.")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{str(path)!r} is not a saved policy: {err}.") from None
    return Policy.from_snapshot(PolicySnapshot.from_dict(data))


def _network(n_in: int, hidden: int, n_out: int, generator: torch.Generator) -> torch.nn.Sequential:
    import torch

    layers: list[torch.nn.Module] = []
    width = n_in
    if hidden:
        first = torch.nn.Linear(n_in, hidden)
        with torch.no_grad():
            bound = 1 / math.sqrt(n_in)
            first.weight.uniform_(-bound, bound, generator=generator)
            first.bias.zero_()
        layers += [first, torch.nn.Tanh()]
        width = hidden
    layers.append(torch.nn.Linear(width, n_out))
    return torch.nn.Sequential(*layers)
