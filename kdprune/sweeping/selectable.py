"""What a sweep may select on: validation metrics and cost (size, MACs, latency) — never test.

A whitelist rather than a name prefix: `teacher_test_acc`, `int8_test_acc` or a metric added later
that reports on the test set do not start with `test_`, and a prefix rule let them through. A
name is selectable when it matches one of the patterns below in full; anything else is refused in
one line, before any work, as `sweep_metric` and as a key of `hydra.sweeper.constraints`.

Two subsets carry rules of their own: the latency-target keys (`latency_speedup`, the measured
speed-up on `prune_method.latency`'s runtime, batch and threads) need a `prune_method.unit=latency`
run, the only kind that writes them; and every metric timed on a CPU (`is_measured`) ties a study
to one CPU (`kdprune.sweeping.one_cpu`).
"""

from __future__ import annotations

import re
from typing import Any

from kdprune.errors import ConfigError
from kdprune.run_record import MACS_SPEEDUP, WEIGHT_SPARSITY

# Accuracy and loss measured on the validation split (the student's, after pruning, the INT8
# model's, the teacher's and a pruned teacher's).
VALIDATION = (
    r"val_(acc|loss)",
    r"after_prune_val_acc",
    r"int8_val_(acc|loss)",
    r"(pruned_)?teacher_val_acc",
)
# What compression costs or saves: parameters, MACs, sparsity, file sizes (counted).
SIZE = (
    r"(params|macs)_(before|after|removed_fraction)",
    MACS_SPEEDUP,
    r"nonzero_fraction",
    WEIGHT_SPARSITY,
    r"channel_ratio",
    r"(dense_)?file_size_bytes",
    r"teacher_(macs|params)",
    r"onnx_file_size_bytes_(dense|fp32|int8)",
    r"(int8|onnx)_size_reduction",
)
# The latency a `prune_method.unit=latency` run measured on its named target
# (`prune_method.latency`); other runs do not write these keys.
LATENCY_TARGET = (r"latency_speedup", r"latency_ms_(before|after)")
# Everything timed on the CPU that ran the trial: the ledger's eager latencies, the INT8 run's
# ONNX Runtime latencies and the latency target's.
MEASURED = (
    r"cpu_latency_ms_bs\d+_(before|after)",
    r"cpu_speedup_bs\d+",
    r"ort_latency_ms_bs\d+_(dense|fp32|int8)",
    r"(int8|ort)_speedup_bs\d+",
    *LATENCY_TARGET,
)
COST = (*SIZE, *MEASURED)


def _pattern(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


SELECTABLE = _pattern((*VALIDATION, *COST))
MEASURED_ON_CPU = _pattern(MEASURED)
NEEDS_LATENCY_TARGET = _pattern(LATENCY_TARGET)


def is_selectable(name: object) -> bool:
    """True for a metric name a sweep may optimise or constrain (validation or cost)."""
    return isinstance(name, str) and SELECTABLE.fullmatch(name) is not None


def check_selectable(name: object, key: str) -> None:
    """ConfigError (one line) unless `name` is a validation or cost metric; `key` names the
    setting it came from, e.g. `sweep_metric`."""
    if is_selectable(name):
        return
    why = "a test-set metric" if "test" in str(name) else "not a validation or cost metric"
    raise ConfigError(
        f"{key} {name!r} is not allowed ({why}): a sweep selects on validation metrics (val_acc, "
        "val_loss, after_prune_val_acc, int8_val_acc ...) or on size, MACs and latency, never test"
    )


def is_measured(name: object) -> bool:
    """True for a metric timed on the CPU that ran the trial (a latency or a measured speed-up)."""
    return isinstance(name, str) and MEASURED_ON_CPU.fullmatch(name) is not None


def objective_names(sweep_metric: Any) -> list[Any]:
    """The metric names a `sweep_metric` setting holds: one name, or a list of them."""
    return [sweep_metric] if isinstance(sweep_metric, str) else list(sweep_metric)


def check_latency_target(name: object, key: str, unit: object) -> None:
    """ConfigError (one line) when `name` is a key only a `prune_method.unit=latency` run writes
    (`latency_speedup`, `latency_ms_before/after`) and the run's unit (`unit`) is another: its
    objective would be missing, or its constraint never met, after all the training."""
    if unit == "latency" or not isinstance(name, str):
        return
    if NEEDS_LATENCY_TARGET.fullmatch(name) is not None:
        raise ConfigError(
            f"{key} {name!r} is measured on the run's latency target, and this run has none "
            f"(prune_method.unit={unit}): set prune_method.unit=latency (the target is "
            "prune_method.latency), or use cpu_speedup_bs64 / macs_speedup"
        )
