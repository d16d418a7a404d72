"""The options of a structured cut, checked before any model exists (`validate`, the pruner),
and what the pruner checks of the model and criterion it is given."""

from __future__ import annotations

from typing import Any

from torch import nn

from kdprune.errors import ConfigError
from kdprune.metrics.latency_target import check_latency_options
from kdprune.pruning.base import (
    ALLOCATIONS,
    MEASURED_UNITS,
    UNITS,
    check_choice,
    check_ratio,
    check_tolerance,
)
from kdprune.pruning.layer_ratios import read_layer_ratios
from kdprune.pruning.masks import has_masks
from kdprune.pruning.rounding import check_round_to

# latency: a knapsack over measured per-group latency tables (kdprune.pruning.latency_allocation)
STRUCTURED_ALLOCATIONS = (*ALLOCATIONS, "latency")


def check_structured_options(
    ratio: Any = None,
    unit: Any = "channels",
    allocation: Any = "uniform",
    max_layer_ratio: Any = 0.9,
    round_to: Any = None,
    iterative_steps: Any = 1,
    tolerance: Any = 0.02,
    layer_ratios: Any = None,
    latency: Any = None,
    **_: Any,
) -> None:
    """Raise ConfigError if an option is out of range (no model needed). The `latency` target
    is checked whenever given (a typo fails now, not when a later run sets unit=latency)."""
    check_ratio(ratio)
    check_choice(unit, UNITS + MEASURED_UNITS, "unit")
    if latency is not None or unit == "latency":
        check_latency_options({} if latency is None else latency)
    check_choice(allocation, STRUCTURED_ALLOCATIONS, "allocation")
    if allocation == "latency" and unit != "latency":
        raise ConfigError(
            "prune_method allocation latency spends a latency target over the groups: it needs "
            f"unit latency, not {unit}."
        )
    if not isinstance(max_layer_ratio, int | float) or not 0.0 < max_layer_ratio < 1.0:
        raise ConfigError(
            f"prune_method max_layer_ratio must lie in (0, 1), got {max_layer_ratio}."
        )
    if unit == "channels" and ratio > max_layer_ratio:
        raise ConfigError(
            f"prune_method ratio {ratio} exceeds max_layer_ratio {max_layer_ratio}, "
            "so no layer may lose that many channels."
        )
    check_round_to(round_to)
    if not isinstance(iterative_steps, int) or iterative_steps < 1:
        raise ConfigError(f"prune_method iterative_steps must be >= 1, got {iterative_steps}.")
    check_tolerance(tolerance)
    if layer_ratios is not None:
        if unit != "channels" or allocation != "uniform":
            raise ConfigError(
                "prune_method layer_ratios sets channel ratios per layer: it needs unit "
                f"channels and allocation uniform, not {unit} and {allocation}."
            )
        read_layer_ratios(layer_ratios, max_layer_ratio)


def check_inputs(model: nn.Module, importance: Any, uncalibrated: bool) -> None:
    """Raise ConfigError for a gradient criterion without calibration batches (`uncalibrated`)
    or a model that still carries masks."""
    if uncalibrated:
        raise ConfigError(
            f"{type(importance).__name__} needs calibration batches; pass calibration=."
        )
    if has_masks(model):
        raise ConfigError(
            "structured pruning needs a mask-free model; call make_permanent(model) first."
        )
