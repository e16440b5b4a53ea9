"""The search space of what muTransfer carries from a proxy to the target."""

from __future__ import annotations

from collections.abc import Mapping

from paretune._errors import ConfigError, describe
from paretune.spaces._params import Float
from paretune.spaces._space import SearchSpace

__all__ = ["NOT_TRANSFERABLE", "TRANSFERABLE", "transfer_space"]

#: What transfers across width under muP, with the default log-range a proxy search covers
#: (the learning rate from 2^-14 to 2^-3; the multipliers an octave and a half either side of
#: 1; the schedule's warmup and decay as fractions of the steps).
TRANSFERABLE: Mapping[str, tuple[float, float, bool]] = {
    "learning_rate": (2.0**-14, 2.0**-3, True),
    "init_std": (0.002, 0.2, True),
    "output_multiplier": (2.0**-3, 2.0**3, True),
    "attention_multiplier": (2.0**-3, 2.0**3, True),
    "warmup_fraction": (0.0, 0.3, False),
    "decay_fraction": (0.0, 0.5, False),
}

#: What does not transfer (Tensor Programs V, section 6): width is what muTransfer crosses;
#: regularisation depends on the data seen and the model's size.
NOT_TRANSFERABLE: tuple[str, ...] = ("width", "weight_decay", "dropout")


def transfer_space(
    names: tuple[str, ...] = ("learning_rate", "init_std", "output_multiplier"),
    *,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> SearchSpace:
    """A search space over transferable hyperparameters, width kept out of it.

    Args:
        names: The hyperparameters searched, from :data:`TRANSFERABLE`.
        ranges: ``(low, high)`` overriding a name's default range; learning rate, std and
            multipliers are searched in log space.

    Raises:
        ConfigError: A name does not transfer (width, weight decay, dropout) or is unknown,
            or a range is not ``(low, high)`` with ``0 < low <= high`` (``0 <= low`` for the
            schedule fractions).
    """
    ranges = dict(ranges or {})
    unknown = [name for name in (*names, *ranges) if name not in TRANSFERABLE]
    if unknown:
        name = unknown[0]
        why = (
            "does not transfer across width under muP, so it cannot be tuned on a proxy"
            if name in NOT_TRANSFERABLE
            else "is not a transferable hyperparameter"
        )
        raise ConfigError(
            f"{describe(name)} {why}; choose from {', '.join(TRANSFERABLE)}.", path=(name,)
        )
    params = []
    for name in names:
        low, high, log = TRANSFERABLE[name]
        if name in ranges:
            value = ranges[name]
            if not (isinstance(value, tuple | list) and len(value) == 2):
                raise ConfigError(
                    f"a range is (low, high), but got {describe(value)}", path=(name,)
                )
            low, high = value
        params.append(Float(name, low=low, high=high, log=log))
    return SearchSpace(params)
