"""Learning-rate schedules: multipliers as pure functions of training progress in [0, 1]."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

from kdprune.errors import ConfigError


def _warm(progress: float, warmup: float) -> float:
    return min(1.0, progress / warmup) if warmup > 0 else 1.0


def _cosine(progress: float, warmup: float, final: float) -> float:
    after = min(max((progress - warmup) / (1 - warmup), 0.0), 1.0)
    cos = 0.5 * (1 + math.cos(math.pi * after))
    return _warm(progress, warmup) * (final + (1 - final) * cos)


def _step(progress: float, warmup: float, milestones: tuple[float, ...], gamma: float) -> float:
    return _warm(progress, warmup) * gamma ** sum(progress >= m for m in milestones)


def cosine(warmup: float = 0.0, final: float = 0.0) -> Callable[[float], float]:
    """Cosine decay to `final`x the base lr, after a linear warm-up over `warmup` of training."""
    if not 0 <= warmup < 1 or final < 0:
        raise ConfigError(
            f"lr_scheduler: warmup must be in [0, 1) and final >= 0, got {warmup}, {final}"
        )
    return partial(_cosine, warmup=warmup, final=final)


def step(
    milestones: Sequence[float] = (0.5, 0.75), gamma: float = 0.1, warmup: float = 0.0
) -> Callable[[float], float]:
    """Multiply the lr by `gamma` at each milestone (a fraction of training: 0.5 = half-way)."""
    if not all(0 < m < 1 for m in milestones) or gamma <= 0:
        raise ConfigError(
            "lr_scheduler: milestones must lie in (0, 1) and gamma > 0, "
            f"got {list(milestones)}, {gamma}"
        )
    return partial(_step, warmup=warmup, milestones=tuple(milestones), gamma=gamma)


def constant() -> Callable[[float], float]:
    """The base learning rate throughout."""
    return partial(_cosine, warmup=0.0, final=1.0)
