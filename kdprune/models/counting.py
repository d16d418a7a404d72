"""Parameters and MACs of a model: the one counter of the ledger, the reports and the pruners'
target searches, low in the import order so that every one of them can use it.

A target search compares models by a `Measure` (model -> a number, smaller is cheaper);
`measure(unit, example_inputs)` gives the count of `unit`, `reduction(measure)` the `Reduction`
a search aims at. A measured unit (CPU latency, `kdprune.metrics.latency_target`) plugs into
the same searches as one more Reduction.
"""

from __future__ import annotations

from collections.abc import Callable

import torch_pruning as tp
from torch import Tensor, nn

from kdprune.models.common import clone_model

COUNTED_UNITS = ("params", "macs")  # what `count` counts; `channels` is a pruner's own knob

Measure = Callable[[nn.Module], float]
# (dense, cut) -> the fraction of the dense model's measure the cut removes. A measured unit
# (`kdprune.metrics.LatencyTarget.reduction`) times both models together, interleaved.
Reduction = Callable[[nn.Module, nn.Module], float]


def _inputs_for(model: nn.Module, example_inputs: Tensor) -> Tensor:
    param = next(model.parameters(), None)
    return example_inputs if param is None else example_inputs.to(param.device)


def count_macs_params(model: nn.Module, example_inputs: Tensor) -> tuple[int, int]:
    """Return (MACs per sample, parameter count) as Torch-Pruning's counter reports them.

    Masked weights still count (they are stored); `nonzero_fraction` measures that sparsity.
    """
    inputs = _inputs_for(model, example_inputs)
    # The counter deep-copies its argument, which fails while pruning masks are attached.
    macs, params = tp.utils.count_ops_and_params(clone_model(model), inputs)
    return int(round(macs)), int(params)


def count(model: nn.Module, example_inputs: Tensor, unit: str) -> int:
    """The model's `unit` (params | macs), as `count_macs_params` counts it. Parameters need no
    forward pass: Torch-Pruning's count is the sum of their sizes, so it is taken directly."""
    if unit == "params":
        return sum(p.numel() for p in model.parameters())
    if unit == "macs":
        return count_macs_params(model, example_inputs)[0]
    raise ValueError(f"count counts {' or '.join(COUNTED_UNITS)}, not {unit!r}")


def measure(unit: str, example_inputs: Tensor) -> Measure:
    """The Measure that counts `unit` of a model on `example_inputs`."""
    if unit not in COUNTED_UNITS:
        raise ValueError(f"no measure of {unit!r}; counted units: {', '.join(COUNTED_UNITS)}")
    return lambda model: count(model, example_inputs, unit)


def reduction(of: Measure) -> Reduction:
    """The Reduction of a Measure: 1 - of(cut) / of(dense)."""
    return lambda dense, cut: 1.0 - of(cut) / of(dense)
