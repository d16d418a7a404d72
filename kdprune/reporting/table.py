"""The teacher-vs-compressed table printed at the end of a run (with an INT8 column when the run
quantized its model)."""

from __future__ import annotations

from typing import Any

from kdprune.run_record import (
    MACS_AFTER,
    MACS_BEFORE,
    MACS_SPEEDUP,
    PARAMS_AFTER,
    PARAMS_BEFORE,
    TEACHER_TEST_ACC,
    TEST_ACC,
)


def _num(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def _layout(title: str, rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join([title, lines[0], "-" * len(lines[0]), *lines[1:]])


def _title(m: dict[str, Any]) -> str:
    quantize = f" | quantize={m['quantize']}" if m.get("quantize") else ""
    return (
        f"{m['order']} | {m['method']} {m['target_ratio']} {m['unit']} | kd={m['kd']}{quantize} | "
        f"{m['model']} on {m['dataset']} (teacher: {m['teacher_source']})"
    )


def comparison_table(m: dict[str, Any]) -> str:
    """A short plain-text table: dense vs compressed accuracy, params, MACs, latency, size; dense
    FP32 vs compressed FP32 vs compressed INT8 for a quantized run."""
    if m.get("quantize"):
        return int8_table(m)
    rows: list[tuple[str, ...]] = [
        ("", "dense", "compressed", "change"),
        (
            "test accuracy",
            f"{m[TEACHER_TEST_ACC]:.4f}",
            f"{m[TEST_ACC]:.4f}",
            f"{100 * (m[TEST_ACC] - m[TEACHER_TEST_ACC]):+.2f} pts",
        ),
        (
            "parameters",
            _num(m[PARAMS_BEFORE]),
            _num(m[PARAMS_AFTER]),
            f"-{100 * m['params_removed_fraction']:.1f}%",
        ),
        ("nonzero weights", "", f"{100 * m['nonzero_fraction']:.1f}%", ""),
        ("MACs", _num(m[MACS_BEFORE]), _num(m[MACS_AFTER]), f"{m[MACS_SPEEDUP]:.2f}x fewer"),
    ]
    for b in (1, 64):
        before, after = m.get(f"cpu_latency_ms_bs{b}_before"), m.get(f"cpu_latency_ms_bs{b}_after")
        if before is not None and after is not None:
            rows.append(
                (
                    f"CPU latency bs={b}",
                    f"{before:.2f} ms",
                    f"{after:.2f} ms",
                    _faster(before / after),
                )
            )
    rows.append(
        ("file size", _num(m["dense_file_size_bytes"]) + "B", _num(m["file_size_bytes"]) + "B", "")
    )
    return _layout(_title(m), rows)


def _faster(ratio: float) -> str:
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


def int8_table(m: dict[str, Any]) -> str:
    """Dense FP32 (the teacher's accuracy, the dense model's size) -> compressed FP32 ->
    compressed INT8; latency and file size of all three as ONNX Runtime runs them."""
    acc, fp32, int8 = m[TEACHER_TEST_ACC], m[TEST_ACC], m["int8_test_acc"]
    rows: list[tuple[str, ...]] = [
        ("", "dense FP32", "compressed FP32", "compressed INT8", "INT8 vs FP32", "INT8 vs dense"),
        ("test accuracy", f"{acc:.4f}", f"{fp32:.4f}", f"{int8:.4f}",
         f"{100 * (int8 - fp32):+.2f} pts", f"{100 * (int8 - acc):+.2f} pts"),
        ("parameters", _num(m[PARAMS_BEFORE]), _num(m[PARAMS_AFTER]),
         _num(m[PARAMS_AFTER]), "", f"-{100 * m['params_removed_fraction']:.1f}%"),
        ("MACs", _num(m[MACS_BEFORE]), _num(m[MACS_AFTER]), _num(m[MACS_AFTER]), "",
         f"{m[MACS_SPEEDUP]:.2f}x fewer"),
    ]  # fmt: skip
    for b in (1, 64):
        ms = [f"{m[f'ort_latency_ms_bs{b}_{v}']:.3f} ms" for v in ("dense", "fp32", "int8")]
        speedups = (_faster(m[f"int8_speedup_bs{b}"]), _faster(m[f"ort_speedup_bs{b}"]))
        rows.append((f"ONNX Runtime bs={b}", *ms, *speedups))
    size = [m[f"onnx_file_size_bytes_{v}"] for v in ("dense", "fp32", "int8")]
    rows.append(("ONNX file size", *(_num(s) + "B" for s in size),
                 f"{m['int8_size_reduction']:.2f}x smaller",
                 f"{m['onnx_size_reduction']:.2f}x smaller"))  # fmt: skip
    for b in (1, 64):
        before, after = m.get(f"cpu_latency_ms_bs{b}_before"), m.get(f"cpu_latency_ms_bs{b}_after")
        if before is not None and after is not None:
            rows.append((f"PyTorch CPU bs={b}", f"{before:.2f} ms", f"{after:.2f} ms", "", "", ""))
    from kdprune.quantization.int8_kernels import (
        speed_note,  # the note lives with the INT8 kernel paths
    )

    note = speed_note(m.get("int8_instructions"))
    return _layout(_title(m), rows) + (f"\nNote: {note}." if note else "")
