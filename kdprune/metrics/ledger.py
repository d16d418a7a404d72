"""The compression ledger: before/after numbers for one dense -> compressed pair (metrics.json).

Keys (all snake_case; `before` is the dense model, `after` the compressed one):

- `params_before`, `params_after` (int): parameters, Torch-Pruning's count (masked weights count)
- `params_removed_fraction`: 1 - params_after / params_before
- `nonzero_fraction`: fraction of non-zero conv + linear weights of the compressed model (all
  layers, classifier included, masks applied)
- `weight_sparsity`: fraction of the dense model's conv + linear weights that are removed or zero
  in the compressed one (structured and masked pruning alike: the achieved sparsity)
- `macs_before`, `macs_after` (int): multiply-accumulates per sample, Torch-Pruning's count
- `macs_removed_fraction`: 1 - macs_after / macs_before; `macs_speedup`: macs_before / macs_after
- `channel_ratio`: achieved fraction of conv output channels removed
- `round_to` (int or null): the multiple structured pruning rounded the kept widths to, as
  resolved (`prune_method.round_to: auto` becomes 16, 8 or null on the CPU that pruned; see
  `kdprune.pruning.rounding`); null when not rounded or not structured
- for each latency batch size b (default 1 and 64): `cpu_latency_ms_bs{b}_before`,
  `cpu_latency_ms_bs{b}_after` (median ms per batch, see `cpu_latency_ms`) and
  `cpu_speedup_bs{b}` (before / after)
- with any latency: the CPU that timed it (`kdprune.cpu_features.CpuInfo.record`): `cpu_model` (the
  model name), `cpu_isa` (widest vector ISA: `avx512f`, `avx2`, ..., `asimd`, `unknown`),
  `cpu_vnni` and `cpu_amx` (bools: the INT8 dot-product instructions)

A run with `prune_method.unit=latency` adds the latency target it was cut to and its measured
latency on it (`kdprune.metrics.latency_target.latency_record`): `latency_runtime` (eager |
onnxruntime | onnxruntime_int8), `latency_batch_size`, `latency_threads`,
`latency_target_reduction` (the `ratio` asked for) and `latency_target_speedup` (1 / (1 -
ratio)), `latency_ms_before`, `latency_ms_after` (median ms per batch, dense and compressed
timed interleaved) and `latency_speedup` (before / after: the measured speed-up on the named
runtime, beside `macs_speedup`), with the `cpu_*` keys of the CPU it was measured on.

A run with `quantize=ptq|qat` adds its INT8 keys (ONNX Runtime accuracy, file sizes, latencies of
the dense, compressed FP32 and INT8 ONNX models): see `kdprune.quantization.quantize_ledger`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from kdprune.cpu_features import cpu_info
from kdprune.metrics.latency import cpu_latency_ms
from kdprune.metrics.size import channel_ratio, nonzero_fraction, weight_sparsity
from kdprune.models.counting import count_macs_params
from kdprune.run_record import (
    MACS_AFTER,
    MACS_BEFORE,
    MACS_SPEEDUP,
    PARAMS_AFTER,
    PARAMS_BEFORE,
    WEIGHT_SPARSITY,
    SizeLedger,
)

LATENCY_BATCH_SIZES = (1, 64)
# The ledger's keys as the run record declares them (kdprune.run_record), in that order.
SIZE_KEYS = tuple(SizeLedger.__annotations__)
CPU_KEYS = ("cpu_model", "cpu_isa", "cpu_vnni", "cpu_amx")


def latency_keys(batch_size: int) -> tuple[str, str, str]:
    """Ledger keys for one batch size: (before ms, after ms, speed-up)."""
    b = batch_size
    return f"cpu_latency_ms_bs{b}_before", f"cpu_latency_ms_bs{b}_after", f"cpu_speedup_bs{b}"


LEDGER_KEYS = SIZE_KEYS + tuple(k for b in LATENCY_BATCH_SIZES for k in latency_keys(b)) + CPU_KEYS


def ledger(
    dense: nn.Module,
    compressed: nn.Module,
    example_inputs: Tensor,
    *,
    latency_batch_sizes: Sequence[int] = LATENCY_BATCH_SIZES,
    repeats: int = 10,
    warmup: int = 2,
    num_threads: int | None = None,
    round_to: int | None = None,
) -> dict[str, Any]:
    """Measure `dense` and `compressed` on `example_inputs` (one sample); return the ledger dict.

    `round_to` is recorded as the multiple the cut rounded widths to. Pass
    `latency_batch_sizes=()` to skip the (slow) timing and the CPU keys; the size keys are always
    present.
    """
    macs_before, params_before = count_macs_params(dense, example_inputs)
    macs_after, params_after = count_macs_params(compressed, example_inputs)
    row: dict[str, Any] = {
        PARAMS_BEFORE: params_before,
        PARAMS_AFTER: params_after,
        "params_removed_fraction": 1.0 - params_after / params_before,
        "nonzero_fraction": nonzero_fraction(compressed),
        WEIGHT_SPARSITY: weight_sparsity(dense, compressed),
        MACS_BEFORE: macs_before,
        MACS_AFTER: macs_after,
        "macs_removed_fraction": 1.0 - macs_after / macs_before,
        MACS_SPEEDUP: macs_before / macs_after,
        "channel_ratio": channel_ratio(dense, compressed),
        "round_to": round_to,
    }
    shape = tuple(example_inputs.shape[1:])
    for batch_size in latency_batch_sizes:
        before_key, after_key, speedup_key = latency_keys(batch_size)
        timing: dict[str, Any] = {"repeats": repeats, "warmup": warmup, "num_threads": num_threads}
        row[before_key] = cpu_latency_ms(dense, shape, batch_size, **timing)
        row[after_key] = cpu_latency_ms(compressed, shape, batch_size, **timing)
        row[speedup_key] = row[before_key] / row[after_key]
    if latency_batch_sizes:
        row |= cpu_info().record()
    return row
