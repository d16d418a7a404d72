"""Each figure's targets, defined once: the figures record them, BENCHMARKS.md shows them.

A target is "<op> <bound>", e.g. ">= 0.95": the figure's ratio must compare so with the bound.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

# (d), every row: measured speed-up / MACs speed-up (Torch-Pruning's own ResNet-50 table reaches
# 0.57-0.66).
LATENCY = ">= 0.7"

TARGETS: dict[str, dict[str, str]] = {
    "training": {"engine_vs_bare_throughput": ">= 0.95"},
    "kd": {"kd_cached_vs_ce_epoch": "<= 1.15"},
    "sweep": {"teacher_trainings": "== 1", "overhead_share": "< 0.05"},
    "cuda": {},  # reported only
}

COMPARE = {">=": operator.ge, "<=": operator.le, "<": operator.lt, "==": operator.eq}


def bound(target: str) -> float:
    """The number a target compares with."""
    return float(target.split()[1])


def meets(value: float, target: str) -> bool:
    """Whether `value` meets `target`."""
    op, limit = target.split()
    return COMPARE[op](value, float(limit))


def targets_for(name: str, ratios: Iterable[str]) -> dict[str, str]:
    """The targets of figure `name`, whose ratios are named `ratios`: (d) has one per row."""
    if name == "latency":
        return {key: LATENCY for key in ratios}
    return dict(TARGETS[name])


LATENCY_RATIO = bound(LATENCY)
