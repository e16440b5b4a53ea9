"""``noisy_quadratic``: SGD on a noisy quadratic, the cheap environment of learning-rate
control (dynamic algorithm configuration).

The noisy quadratic model (Schaul et al. 2013; Zhang et al. 2019) is where a learning-rate
schedule's trade-off shows in closed form: the loss is ``0.5 * sum(h_i * x_i^2)`` with
curvatures ``h_i = i^-exponent``; each step's gradient is ``h * x`` plus Gaussian noise of
standard deviation ``noise * sqrt(h)``. A large learning rate makes fast progress on the flat
directions but leaves the iterate bouncing at a noise floor proportional to it, a small one is
precise but slow: no constant rate is best, a decaying one is, and by how much depends on the
instance (its curvatures, its noise, its start). Plain numpy, a run takes milliseconds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from paretune._errors import ConfigError, describe
from paretune.objectives._base import BaseObjective
from paretune.objectives._protocol import Metric, TrialContext
from paretune.spaces import Float, SearchSpace
from paretune.spaces.dynamic import DynamicParam, StateTracker, dynamic_param_from_dict

__all__ = ["OVERRIDABLE", "NoisyQuadratic"]

#: Settings a parameter of the same name overrides for one trial (an instance's own values).
OVERRIDABLE = ("learning_rate", "noise", "exponent", "dim", "steps", "seed")


class NoisyQuadratic(BaseObjective):
    """SGD with a (possibly dynamic) learning rate on a noisy quadratic.

    Every setting can be overridden by a parameter of the same name, so an instance of a DAC
    run (``{seed: 3, noise: 0.5}``) or a search over the learning rate sets it per trial.

    Args:
        dim: Dimensions.
        exponent: Curvatures are ``i^-exponent``, ``i = 1..dim`` (the condition number is
            ``dim^exponent``).
        noise: The gradient noise's scale.
        steps: SGD steps.
        learning_rate: The (initial) learning rate.
        seed: The start (``x0 ~ N(0, I)``) and the noise's seed; ``None``: the trial's seed.
        dynamic: The learning rate as a dynamic parameter (spec form, without ``name``):
            ``ctx.decide`` sets it every ``interval`` steps.

    Metrics:
        ``log10_loss`` (minimised): the noise-free loss after the last step, as ``log10``;
        ``loss`` the same as it is.
    """

    metrics = (Metric("log10_loss", "minimize"),)
    overridable = OVERRIDABLE

    def __init__(
        self,
        *,
        dim: int = 20,
        exponent: float = 1.0,
        noise: float = 1.0,
        steps: int = 200,
        learning_rate: float = 0.1,
        seed: int | None = None,
        dynamic: dict[str, Any] | None = None,
    ) -> None:
        self.settings: dict[str, Any] = {
            "dim": dim,
            "exponent": exponent,
            "noise": noise,
            "steps": steps,
            "learning_rate": learning_rate,
            "seed": seed,
        }
        self._check(self.settings)
        self.dynamic: DynamicParam | None = None
        if dynamic is not None:
            spec = {"low": 1e-4, "high": 2.0, **dynamic}
            try:
                self.dynamic = dynamic_param_from_dict(spec, name="learning_rate")
            except ConfigError as err:
                raise ConfigError(err.message, path=("dynamic", *err.path[1:])) from None
        self.space = SearchSpace([Float("learning_rate", low=1e-3, high=2.0, log=True)])

    @staticmethod
    def _check(settings: dict[str, Any]) -> None:
        rules = {
            "dim": lambda v: isinstance(v, int) and v >= 1,
            "exponent": lambda v: isinstance(v, (int, float)) and v >= 0,
            "noise": lambda v: isinstance(v, (int, float)) and v >= 0,
            "steps": lambda v: isinstance(v, int) and v >= 1,
            "learning_rate": lambda v: isinstance(v, (int, float)) and v > 0,
            "seed": lambda v: v is None or isinstance(v, int),
        }
        for name, ok in rules.items():
            value = settings[name]
            if isinstance(value, bool) or not ok(value):
                raise ConfigError(f"invalid {name}={describe(value)}.", path=(name,))

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"NoisyQuadratic(dim={s['dim']}, exponent={s['exponent']}, noise={s['noise']}, "
            f"steps={s['steps']}, dynamic={self.dynamic is not None})"
        )

    def __call__(self, params: dict[str, Any], ctx: TrialContext) -> dict[str, float]:
        unknown = sorted(set(params) - set(OVERRIDABLE))
        if unknown:
            raise ConfigError(
                f"noisy_quadratic has no setting {unknown[0]!r}; a parameter overrides one of "
                f"{', '.join(OVERRIDABLE)}.",
                path=(unknown[0],),
            )
        s = {**self.settings, **params}
        self._check(s)
        seed = ctx.seed if s["seed"] is None else s["seed"]
        rng = np.random.default_rng(abs(int(seed)))
        h = np.arange(1, s["dim"] + 1, dtype=np.float64) ** -float(s["exponent"])
        x = rng.standard_normal(s["dim"])
        lr = float(s["learning_rate"])
        steps = int(s["steps"])
        noise = float(s["noise"]) * np.sqrt(h)
        dynamic = self.dynamic
        if dynamic is not None:
            lr = dynamic.clip(lr if dynamic.initial is None else dynamic.initial)
        tracker = StateTracker(steps, window=dynamic.interval if dynamic else 10)
        evals = {round(steps * (i + 1) / 4) for i in range(4)}
        for step in range(steps):
            if dynamic is not None and step % dynamic.interval == 0:
                lr = dynamic.clip(ctx.decide(tracker.state(step, lr, "learning_rate")))
            grad = h * x + noise * rng.standard_normal(s["dim"])
            update = lr * grad
            ratio = float(np.linalg.norm(update) / max(np.linalg.norm(x), 1e-300))
            x = x - update
            loss = 0.5 * float(np.sum(h * x * x))
            if not math.isfinite(loss) or loss > 1e30:
                loss = 1e30  # diverged: the worst loss, not an error (a policy may overshoot)
                x = np.full_like(x, 1e15)
            # The state sees the noisy minibatch loss, as a training loop would.
            noisy = loss + float(np.sum(noise * rng.standard_normal(s["dim"]) * x)) * 0.5
            tracker.observe(
                step + 1, noisy, grad_norm=float(np.linalg.norm(grad)), update_ratio=ratio
            )
            if step + 1 in evals:
                ctx.report(step + 1, {"log10_loss": math.log10(max(loss, 1e-300)), "lr": lr})
        return {"log10_loss": math.log10(max(loss, 1e-300)), "loss": loss}
