"""CPU inference latency: median wall time of repeated forward passes after a warm-up."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn

from kdprune.pruning.masks import clone_model, make_permanent


def cpu_latency_ms(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int,
    repeats: int = 20,
    warmup: int = 3,
    num_threads: int | None = None,
) -> float:
    """Median milliseconds per forward of a batch of `input_shape` (one sample, e.g. C, H, W).

    Runs on a CPU copy in eval mode under `torch.inference_mode()`, with pruning masks folded
    (as a deployed model would have them); `num_threads` sets torch's thread count meanwhile.
    """
    copy = clone_model(model).cpu().eval()
    make_permanent(copy)
    inputs = torch.randn(batch_size, *input_shape)
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                copy(inputs)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                copy(inputs)
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return 1000.0 * statistics.median(times)
