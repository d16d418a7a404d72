"""The quantization stage's part of the run ledger (metrics.json), measured in ONNX Runtime.

Keys (present when `quantize` is not `none`; FP32 = the compressed model of model.pt exported to
ONNX, dense = dense.pt exported to ONNX, INT8 = model.int8.onnx):

- `quantize`: the stage (`ptq` | `qat`); `int8_layers`: conv / linear layers with INT8 weights
  (every one: the stage fails otherwise); `int8_instructions`: the CPU's best INT8 instruction set
  (`amx_int8`, `avx512_vnni`, `avx_vnni`, `asimddp`, `avx2`, ...)
- `int8_kernel_path`: the INT8 kernel path the weights were quantized for: the value of
  `quantize.int8_kernel_path`, resolved (`kdprune.quantization.int8_kernels`): `vnni` (int8
  weights in [-128, 127]; AMX, AVX-512 VNNI, AVX-VNNI, Arm SDOT) or `avx2_7bit` (weights in
  [-64, 64], so that the 16-bit sums of the vpmaddubsw kernels of CPUs without VNNI cannot
  saturate); activations are uint8 on both
- `int8_val_acc`, `int8_test_acc`, `int8_val_loss`, `int8_test_loss`: the INT8 model in ONNX
  Runtime on the run's validation and test splits
- `onnx_file_size_bytes_{dense,fp32,int8}`; `int8_size_reduction` (FP32 / INT8 file) and
  `onnx_size_reduction` (dense / INT8 file)
- for each latency batch size b (1 and 64): `ort_latency_ms_bs{b}_{dense,fp32,int8}` (median
  ms per batch in ONNX Runtime, `measure.threads` intra-op threads, after `measure.warmup` runs,
  the three models timed interleaved),
  `int8_speedup_bs{b}` (FP32 / INT8) and `ort_speedup_bs{b}` (dense / INT8)
- `onnx_dense_file`, `onnx_fp32_file`, `int8_model_file`: the files written beside model.pt
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdprune.metrics import LATENCY_BATCH_SIZES, file_size_bytes
from kdprune.quantization.onnx_measure import ort_evaluate, ort_latency_ms

VARIANTS = ("dense", "fp32", "int8")


def latency_key(batch_size: int, variant: str) -> str:
    """`ort_latency_ms_bs{b}_{variant}`."""
    return f"ort_latency_ms_bs{batch_size}_{variant}"


def accuracy_record(session: Any, loaders, max_batches: int | None) -> dict[str, float]:
    """`int8_{val,test}_{acc,loss}` of an ONNX Runtime session on the run's splits."""
    out = {}
    for split in ("val", "test"):
        result = ort_evaluate(session, getattr(loaders, split), max_batches)
        out[f"int8_{split}_acc"], out[f"int8_{split}_loss"] = result["acc"], result["loss"]
    return out


def size_record(files: dict[str, Path]) -> dict[str, Any]:
    """File sizes of the three ONNX models and the reductions INT8 brings."""
    size = {v: file_size_bytes(files[v]) for v in VARIANTS}
    return {
        **{f"onnx_file_size_bytes_{v}": size[v] for v in VARIANTS},
        "int8_size_reduction": size["fp32"] / size["int8"],
        "onnx_size_reduction": size["dense"] / size["int8"],
        "onnx_dense_file": str(files["dense"]),
        "onnx_fp32_file": str(files["fp32"]),
        "int8_model_file": str(files["int8"]),
    }


def latency_record(
    files: dict[str, Path], input_shape: tuple[int, ...], measure: Any
) -> dict[str, float]:
    """ONNX Runtime latency of the three models at each latency batch size, and the speed-ups."""
    timing = {
        "repeats": int(measure.repeats),
        "warmup": int(measure.warmup),
        "threads": measure.get("threads"),
    }
    out: dict[str, float] = {}
    for b in LATENCY_BATCH_SIZES:
        ms = ort_latency_ms({v: files[v] for v in VARIANTS}, input_shape, b, **timing)
        out.update({latency_key(b, v): ms[v] for v in VARIANTS})
        out[f"int8_speedup_bs{b}"] = ms["fp32"] / ms["int8"]
        out[f"ort_speedup_bs{b}"] = ms["dense"] / ms["int8"]
    return out
