"""Each figure's targets, defined once: the figures record them, BENCHMARKS.md shows them.

A target is "<op> <bound>", e.g. ">= 0.95": the figure's ratio must compare so with the bound.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

# (d), every row: measured speed-up / MACs speed-up (Torch-Pruning's own ResNet-50 table reaches
# 0.57-0.66).
LATENCY = ">= 0.7"
# (f), every row: INT8 / FP32 ONNX Runtime speed-up of a model's 2x cut (judged on ResNet-20 at
# batch 64; Intel's x86 INT8 reaches 2.97x geomean with AMX, which this CPU lacks).
QUANTIZATION = ">= 1.8"
# (h), every latency cut: 1 - |measured speed-up / the one asked for - 1|, i.e. within 10% of it
# (issue 20: ResNet-20 and MobileNetV2 at 2x, ONNX Runtime, batch 64, one thread).
LATENCY_TARGET = ">= 0.9"

TARGETS: dict[str, dict[str, str]] = {
    "training": {"engine_vs_bare_throughput": ">= 0.95"},
    "kd": {"kd_cached_vs_ce_epoch": "<= 1.15"},
    "sweep": {"teacher_trainings": "== 1", "overhead_share": "< 0.05"},
    "cuda": {},  # reported only
    # (g): a training epoch on 2 processes of one thread / 1 process of one thread.
    "ddp": {"two_ranks_vs_one_epoch": "<= 0.7"},
}

COMPARE = {">=": operator.ge, "<=": operator.le, "<": operator.lt, "==": operator.eq}


def bound(target: str) -> float:
    """The number a target compares with."""
    return float(target.split()[1])


def meets(value: float, target: str) -> bool:
    """Whether `value` meets `target`."""
    op, limit = target.split()
    return COMPARE[op](value, float(limit))


# Figures with one target per row (the same for every row).
PER_ROW = {"latency": LATENCY, "quantization": QUANTIZATION, "latency_target": LATENCY_TARGET}


def targets_for(name: str, ratios: Iterable[str]) -> dict[str, str]:
    """The targets of figure `name`, whose ratios are named `ratios`: one per row for PER_ROW."""
    if name in PER_ROW:
        return {key: PER_ROW[name] for key in ratios}
    return dict(TARGETS[name])


LATENCY_RATIO = bound(LATENCY)
QUANTIZATION_RATIO = bound(QUANTIZATION)


def met_cell(values: list[float], bounds: list[float], target: float, why: str) -> str:
    """A summary row's "met" cell: how many rows met `target`, how many are out of reach here
    (missed, and their measured bound is below the target too: `why` says which bound), and
    how many are simply not met."""
    met = sum(v >= target for v in values)
    out_of_reach = sum(v < target and b < target for v, b in zip(values, bounds, strict=True))
    open_ = len(values) - met - out_of_reach
    if met == len(values):
        return "yes"
    return f"{met} of {len(values)}; {out_of_reach} out of reach here ({why})" + (
        f"; **{open_} not met**" if open_ else ""
    )
