"""Checks of plain config values, shared by the config checks and the groups' own classes.

Each raises ConfigError with one sentence naming the key, the value and what is allowed. A leaf
module: the command line's checks import it without loading torch.
"""

from __future__ import annotations

from typing import Any

from kdprune.errors import ConfigError


def whole_number(value: Any, key: str, minimum: int = 0) -> int:
    """`value` as an int, or ConfigError unless it is a whole number >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be a whole number >= {minimum}, got {value!r}")
    return value


def number(value: Any, key: str, low: float | None = None, high: float | None = None) -> float:
    """`value` as a float, or ConfigError unless it is a number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ConfigError(f"{key} must lie in {bounds}, got {value!r}")
    return float(value)
