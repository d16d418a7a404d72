"""The reductions of uniform structured cuts, remembered for the life of the process.

A params/macs target is searched several times on one architecture: by the command line's
check, by the run's check, by the cut itself and by joint's plan, each over ~20 to 50 candidate
cuts, and each candidate is a Torch-Pruning pass over a copy of the model (a quarter of a small
run's time on the headline's `lenet5_wide`). With uniform allocation Torch-Pruning takes the
same number of channels from every group whatever their scores, so a cut's widths, params and
MACs follow from the architecture, the ratio and the rounding; the scores only pick which
channels go. The reduction is then a function of `uniform_cut_key`, and remembering it changes
how long a search takes, never what it finds. A criterion that draws random numbers is never
remembered: skipping its pass would move the random stream the run trains with afterwards.

A measured latency (`prune_method.unit=latency`) is remembered too, its `unit` being the
target's key (`kdprune.metrics.LatencyTarget.key`: runtime, batch, threads, protocol, CPU model
and ISA). There remembering does change what a search finds, by design: a second measurement of
the same cut would differ by the timing noise, and a run's checks and its cut must agree.
"""

from __future__ import annotations

from typing import Any

import torch_pruning as tp
from torch import Tensor, nn

LIMIT = 4096  # entries; a long worker that sees many architectures starts over past it


class Reductions(dict):
    """uniform_cut_key -> the cut's reduction (1 - count after / count before)."""

    def remember(self, key: tuple[Any, ...], reduction: float) -> None:
        if len(self) >= LIMIT:
            self.clear()
        self[key] = reduction


REDUCTIONS = Reductions()


def shapes(inputs: Any) -> Any:
    """The shapes and dtypes of example inputs (a tensor, or a tuple / list / dict of them)."""
    if isinstance(inputs, Tensor):
        return (tuple(inputs.shape), str(inputs.dtype))
    if isinstance(inputs, dict):
        return tuple((k, shapes(v)) for k, v in sorted(inputs.items()))
    return tuple(shapes(v) for v in inputs)


def uniform_cut_key(
    model: nn.Module,
    example_inputs: Any,
    unit: Any,
    importance: Any,
    limits: tuple[float, int, tuple[str, ...], dict[str, float]],
    ratio: float,
    round_to: int | None,
) -> tuple[Any, ...] | None:
    """What the reduction of a uniform cut of `model` at channel `ratio` depends on; None for a
    criterion that draws random numbers. `limits`: max_layer_ratio, iterative_steps, the
    ignored module paths and the per-layer ratios."""
    if isinstance(importance, tp.importance.RandomImportance):
        return None
    max_layer_ratio, steps, ignored, layer_ratios = limits
    return (
        repr(model),  # every layer's type, widths, kernel, stride and padding
        shapes(example_inputs),
        unit,
        type(importance).__qualname__,  # which groups it scores (BN-scale needs BatchNorm)
        max_layer_ratio,
        steps,
        tuple(ignored),
        tuple(sorted(layer_ratios.items())),
        ratio,
        round_to,
        tp.__version__,  # its rounding rules
    )
