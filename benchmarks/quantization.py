"""(f) INT8 vs FP32 in ONNX Runtime: the benchmark models at their 2x MACs cut, quantized as
`quantize=ptq` quantizes a run's model, timed at batch 1 and 64, with where the time goes."""

from __future__ import annotations

import functools
import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.compression import LATENCY_INPUTS, compress, conv_widths
from benchmarks.fixtures import build, model_cfg
from benchmarks.latency import calls_per_sample, forward_ms, ort_call
from benchmarks.machine import ort_version
from benchmarks.measure import figure, interleaved, medians
from benchmarks.sizes import Sizes
from kdprune.cpu_features import cpu_info
from kdprune.quantization.int8_kernels import resolve_kernel_path

# ONNX Runtime operators by what they do in an INT8 graph (after its own fusions).
INT8_KERNELS = ("QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "ConvInteger")
FP32_KERNELS = ("Conv", "FusedConv", "Gemm", "MatMul", "FusedMatMul")
CONVERSIONS = ("QuantizeLinear", "DequantizeLinear", "Transpose", "ReorderInput", "ReorderOutput")
CALIBRATION_IMAGES = 256


def int8_pair(name: str, sizes: Sizes, folder: Path) -> dict[str, Any]:
    """The model's 2x MACs cut (random weights) as FP32 ONNX and as PTQ INT8 ONNX."""
    from kdprune.pruning import save_model

    c, s = LATENCY_INPUTS[name]
    example = torch.randn(1, c, s, s)
    tolerance = sizes.latency_tolerance.get(name, sizes.latency_default_tolerance)
    model, history, rounding = compress(
        build(name, c, s).eval(), example, 0.5, sizes.latency_roundings, tolerance
    )
    path = save_model(folder / f"{name}-2x.pt", model, model_cfg(name, c, s), history)
    fp32, int8 = _quantized(path, torch.randn(CALIBRATION_IMAGES, c, s, s))
    return {"fp32": fp32, "int8": int8, "input": (c, s), "widths": conv_widths(model),
            "round_to": rounding}  # fmt: skip


def _quantized(model_file: Path, images: torch.Tensor) -> tuple[Path, Path]:
    """FP32 and INT8 ONNX files of a model file, made by the run's own functions."""
    from kdprune.quantization.calibration_images import CalibrationReader
    from kdprune.quantization.files import export_fp32
    from kdprune.quantization.onnx_ptq import quantize_onnx

    fp32 = export_fp32(model_file, model_file.with_suffix(".onnx"))
    int8 = quantize_onnx(fp32, model_file.with_suffix(".int8.onnx"), CalibrationReader(images))
    return fp32, int8


def time_pair(files: dict[str, Path], shape: tuple[int, ...], batch: int, sizes: Sizes):
    """Median ms per batch of the FP32 and INT8 files, measured interleaved."""
    from kdprune.export import ort_session

    x = torch.randn(batch, *shape)
    calls = calls_per_sample(sizes, batch)
    sides = {
        v: functools.partial(forward_ms, ort_call(ort_session(files[v], sizes.threads), x), calls)
        for v in ("fp32", "int8")
    }
    interleaved(sides, 1)  # warm-up
    return medians(interleaved(sides, sizes.latency_reps))


def op_ms(path: Path, shape: tuple[int, ...], batch: int, threads: int, calls: int = 10):
    """ONNX Runtime's profiler: ms per call spent in each operator type (its kernels' own time)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="kdprune-bench-profile-") as folder:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "ort")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {"input": torch.randn(batch, *shape).numpy()}
        for _ in range(calls + 2):
            session.run(["logits"], feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    spent: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            spent[e["args"]["op_name"]] += e["dur"] / 1000.0 / (calls + 2)
    return dict(spent)


def _share(ops: dict[str, float], kinds: tuple[str, ...]) -> float:
    return sum(ms for op, ms in ops.items() if op in kinds)


def split_row(fp32_ops: dict[str, float], int8_ops: dict[str, float]) -> dict[str, float]:
    """Where the time goes: the INT8 kernels' speed-up over FP32's, the share of the INT8 time
    in conversions (quantize, dequantize, layout) and in ops that stay float or elementwise."""
    k32, k8 = _share(fp32_ops, FP32_KERNELS), _share(int8_ops, INT8_KERNELS)
    total8 = sum(int8_ops.values())
    conversions = _share(int8_ops, CONVERSIONS)
    return {
        "kernel_speedup": k32 / k8 if k8 else float("nan"),
        "conversion_share": conversions / total8 if total8 else float("nan"),
        "other_share": (total8 - conversions - k8) / total8 if total8 else float("nan"),
        "kernel_share_fp32": k32 / sum(fp32_ops.values()) if fp32_ops else float("nan"),
    }


def pair_rows(name: str, pair: dict[str, Any], sizes: Sizes) -> list[dict[str, Any]]:
    """One row per batch size: measured INT8 speed-up, and what bounds it."""
    c, s = pair["input"]
    rows = []
    for batch in sizes.latency_batches:
        ms = time_pair(pair, (c, s, s), batch, sizes)
        ops = {v: op_ms(pair[v], (c, s, s), batch, sizes.threads) for v in ("fp32", "int8")}
        split = split_row(ops["fp32"], ops["int8"])
        speedup = ms["fp32"] / ms["int8"]
        rows.append({
            "model": name, "batch": batch, "fp32_ms": ms["fp32"], "int8_ms": ms["int8"],
            "speedup": speedup, **split,
            # INT8 with conversions for free: what its kernels and float ops allow here.
            "bound": speedup / (1.0 - split["conversion_share"]),
            "op_ms": ops,
        })  # fmt: skip
    return rows


def kernel_rows(sizes: Sizes, folder: Path, batch: int = 64) -> list[dict[str, Any]]:
    """A 3x3 conv + ReLU alone at each (channels, map size) of `quantization_kernels`: FP32 vs
    INT8 ms, at `batch`."""
    rows = []
    for width, size in sizes.quantization_kernels:
        conv = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU()).eval()
        files = _quantized_module(conv, folder / f"conv{width}", width, size)
        ms = time_pair(files, (width, size, size), batch, sizes)
        rows.append({"channels": width, "map": size, "batch": batch, "fp32_ms": ms["fp32"],
                     "int8_ms": ms["int8"], "speedup": ms["fp32"] / ms["int8"]})  # fmt: skip
    return rows


def _quantized_module(conv: nn.Module, stem: Path, width: int, size: int) -> dict[str, Path]:
    """FP32 and INT8 ONNX files of a bare module (no model file to rebuild it from)."""
    from kdprune.export import export_module
    from kdprune.quantization.calibration_images import CalibrationReader
    from kdprune.quantization.onnx_graph import save, strip_debug_info
    from kdprune.quantization.onnx_ptq import quantize_onnx

    fp32 = stem.with_suffix(".onnx")
    export_module(conv, torch.randn(2, width, size, size), fp32, dynamic=True)
    save(strip_debug_info(fp32), fp32)
    images = torch.randn(CALIBRATION_IMAGES // 4, width, size, size)
    int8 = quantize_onnx(fp32, stem.with_suffix(".int8.onnx"), CalibrationReader(images))
    return {"fp32": fp32, "int8": int8}


def measure(sizes: Sizes) -> dict[str, Any]:
    """(f) INT8 / FP32 ONNX Runtime speed-up of each benchmark model's 2x cut."""
    rows: list[dict[str, Any]] = []
    models: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="kdprune-bench-int8-") as folder:
        for name in sizes.latency_models:
            pair = int8_pair(name, sizes, Path(folder))
            models[name] = {"widths": pair["widths"], "round_to": pair["round_to"],
                            "fp32_bytes": pair["fp32"].stat().st_size,
                            "int8_bytes": pair["int8"].stat().st_size}  # fmt: skip
            rows += pair_rows(name, pair, sizes)
        kernels = kernel_rows(sizes, Path(folder), max(sizes.latency_batches))
    ratios = {f"{r['model']}/2x/bs{r['batch']}": r["speedup"] for r in rows}
    return figure("quantization", ratios, rows=rows, models=models, kernels=kernels,
                  setup=setup(sizes), cpu=cpu_info().record())  # fmt: skip


def setup(sizes: Sizes) -> str:
    """How (f) was measured, for BENCHMARKS.md."""
    return (
        f"each model's 2x MACs cut as in (d) (random weights), exported to FP32 ONNX and "
        f"quantized as `quantize=ptq` does (ONNX Runtime {ort_version()} static quantization, "
        f"QDQ, uint8 activations, int8 per-channel weights ({resolve_kernel_path('auto').name} "
        f"kernel path), MinMax over {CALIBRATION_IMAGES} "
        f"random images); CPU provider, graph optimisations on, {sizes.threads} thread(s); "
        f"median of {sizes.latency_reps} interleaved samples of {sizes.latency_calls} calls' "
        f"median (batch 1; {calls_per_sample(sizes, 64)} at larger batches). Operator times from "
        "ONNX Runtime's profiler over 12 calls of each file"
    )
