"""(f)'s Markdown: the summary rows per batch, and the section that explains each miss."""

from __future__ import annotations

from typing import Any

from benchmarks.markdown import pct, target_cell, times
from benchmarks.targets import QUANTIZATION, QUANTIZATION_RATIO, met_cell
from kdprune.reporting.markdown import md_table

HEADER = [
    "model (2x cut)",
    "batch",
    "FP32 ms",
    "INT8 ms",
    "INT8 speed-up",
    "INT8 kernels vs FP32's",
    "conversions (share of INT8)",
    "other ops (share of INT8)",
    "bound without conversions",
]


def summary(f: dict[str, Any]) -> list[list[str]]:
    """(f)'s rows of the summary table, one per batch: the worst model, how many met."""
    rows = []
    for batch in sorted({r["batch"] for r in f["rows"]}):
        sel = [r for r in f["rows"] if r["batch"] == batch]
        worst = min(sel, key=lambda r: r["speedup"])
        rows.append([
            f"(f) INT8 / FP32 speed-up, ONNX Runtime, batch {batch}: worst of {len(sel)} "
            f"({worst['model']} 2x)",
            times(worst["speedup"]), target_cell(QUANTIZATION, "×"), _met(sel),
        ])  # fmt: skip
    return rows


def _met(sel: list[dict[str, Any]]) -> str:
    why = f"bound < {QUANTIZATION_RATIO:g}×, see (f)"
    return met_cell([r["speedup"] for r in sel], [r["bound"] for r in sel], QUANTIZATION_RATIO, why)


def section(f: dict[str, Any]) -> list[str]:
    """(f) details: each model's speed-up, its kernel speed-up and overheads, the conv table."""
    return [
        "## (f) INT8 vs FP32 in ONNX Runtime (quantize=ptq)",
        "",
        f"Measured on: {cpu_label(f)}.",
        "",
        f"Setup: {f['setup']}. Models: {_models(f)}. Target: INT8 {target_cell(QUANTIZATION, '×')} "
        "faster than FP32 (Intel reports 2.97× geomean for x86 INT8 over 69 models, with AMX). "
        "Without VNNI or AMX, INT8 buys size, not speed: on an AVX2-only AMD EPYC issue 17's "
        "author measured 0.88× (ResNet-20), 0.97× (MobileNetV2), 0.48× (LeNet-5) at batch 64.",
        "",
        *md_table(HEADER, [_row(r) for r in f["rows"]]),
        "",
        *_explanations(f),
        *_kernel_table(f),
        *_misses(f["rows"]),
        f"Reproduce: `{f['command']}`.",
    ]


def cpu_label(f: dict[str, Any]) -> str:
    """The CPU (f) was measured on: its model and INT8 instructions (`cpu` of the figure; older
    figures recorded only the model name, and came from an AVX-512 VNNI CPU without AMX)."""
    cpu = f.get("cpu")
    if cpu is None:
        return f"{f['machine']['cpu']}, AVX-512 VNNI, no AMX"
    has = [name for name, key in (("VNNI", "cpu_vnni"), ("AMX", "cpu_amx")) if cpu[key]]
    lacks = [name for name, key in (("VNNI", "cpu_vnni"), ("AMX", "cpu_amx")) if not cpu[key]]
    return ", ".join([cpu["cpu_model"], cpu["cpu_isa"], *has, *(f"no {n}" for n in lacks)])


def _row(r: dict[str, Any]) -> list[Any]:
    speedup = times(r["speedup"])
    return [
        r["model"], r["batch"], f"{r['fp32_ms']:.3f}", f"{r['int8_ms']:.3f}",
        f"**{speedup}**" if r["speedup"] < QUANTIZATION_RATIO else speedup,
        times(r["kernel_speedup"]), pct(r["conversion_share"]), pct(r["other_share"]),
        times(r["bound"]),
    ]  # fmt: skip


def _models(f: dict[str, Any]) -> str:
    return "; ".join(
        f"{name}: conv widths {m['widths']}"
        + (f" (round_to {m['round_to']})" if m.get("round_to") else "")
        + f", ONNX file {m['fp32_bytes'] / 1e3:.0f} kB FP32 → {m['int8_bytes'] / 1e3:.0f} kB "
        f"INT8 ({m['fp32_bytes'] / m['int8_bytes']:.2f}× smaller)"
        for name, m in f["models"].items()
    )


def _explanations(f: dict[str, Any]) -> list[str]:
    return [
        "*INT8 kernels vs FP32's*: ONNX Runtime's profiler time in the FP32 graph's convolution "
        "and GEMM kernels (its NCHWc convs, with bias, ReLU and residual adds fused in) over "
        "that in the INT8 graph's integer kernels (QLinearConv, QGemm). *conversions*: the "
        "INT8 graph's time in QuantizeLinear, DequantizeLinear and layout transposes (NCHW ↔ "
        "NHWC for the integer convs). *other ops*: the rest of the INT8 graph (QLinearAdd for "
        "residuals, pooling and reductions that stay float). *bound without conversions*: the "
        "speed-up if conversions cost nothing, measured speed-up / (1 − conversion share). Where "
        f"it is below {QUANTIZATION_RATIO:g}×, the target is out of reach on this machine for "
        "that model and batch: its integer kernels and the ops around them alone keep it there.",
        "",
    ]


def _kernel_table(f: dict[str, Any]) -> list[str]:
    rows = [
        [k["channels"], f"{k['map']}×{k['map']}", k["batch"], f"{k['fp32_ms']:.3f}",
         f"{k['int8_ms']:.3f}", times(k["speedup"])]
        for k in f["kernels"]
    ]  # fmt: skip
    return [
        "A 3×3 conv + ReLU alone, FP32 vs the same quantized (what the integer kernels give per "
        "width on this CPU; a pruned model's narrow layers get the narrow rows' speed-up):",
        "",
        *md_table(
            ["channels in = out", "map", "batch", "FP32 ms", "INT8 ms", "INT8 speed-up"], rows
        ),  # fmt: skip
        "",
    ]


def _misses(rows: list[dict[str, Any]]) -> list[str]:
    missed = [r for r in rows if r["speedup"] < QUANTIZATION_RATIO]
    if not missed:
        return []
    lines = ["Rows that miss, and why (from the columns above):", ""]
    for r in missed:
        why = (
            "out of reach here"
            if r["bound"] < QUANTIZATION_RATIO
            else "**not explained** by the kernels alone"
        )
        slower = " — INT8 is *slower* than FP32 here" if r["speedup"] < 1 else ""
        lines.append(
            f"- {r['model']} 2x, batch {r['batch']}: {times(r['speedup'])}{slower}; {why}: the "
            f"integer kernels run {times(r['kernel_speedup'])} as fast as FP32's, conversions "
            f"take {pct(r['conversion_share'])} and other ops {pct(r['other_share'])} of the "
            f"INT8 time (FP32 spends {pct(r['kernel_share_fp32'])} of its time in its kernels); "
            f"bound {times(r['bound'])}."
        )
    return [*lines, ""]
