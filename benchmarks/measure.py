"""Measuring helpers shared by the figures: interleaved samples, medians, the figure's record."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks.targets import meets, targets_for

MAKE = "make bench ARGS='--only {}'"


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (what else ran on the machine meanwhile)."""
    return [round(x, 2) for x in os.getloadavg()]


def interleaved(sides: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    """Measure each side `reps` times in turn (A, B, A, B, ...); return every sample per side."""
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(reps):
        for name, measure in sides.items():
            samples[name].append(measure())
    return samples


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    """The median of each side's samples."""
    return {name: statistics.median(values) for name, values in samples.items()}


def timed(fn: Callable[[], Any]) -> float:
    """Seconds `fn()` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def reproduce(name: str) -> str:
    """The command that measures figure `name` again."""
    return MAKE.format(name)


def figure(name: str, ratios: dict[str, float], **details: Any) -> dict[str, Any]:
    """Figure `name`'s record: ratios, targets and whether each is met, details, how to rerun."""
    targets = targets_for(name, ratios)
    met = {key: meets(ratios[key], target) for key, target in targets.items()}
    return {
        "ratios": ratios,
        "targets": targets,
        "met": met,
        "loadavg": loadavg(),
        **details,
        "command": reproduce(name),
    }
