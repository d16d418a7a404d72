"""The report's view of quantized runs (`quantize=ptq|qat`): test accuracy against model file size
and ONNX Runtime latency, an FP32 and an INT8 point per configuration, and the Quantization
section of PRUNING_REPORT.md. Reports of runs without INT8 keys get neither."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter

from kdprune.reporting.config_groups import config_names
from kdprune.reporting.markdown import md_table
from kdprune.reporting.plots import ORDER_COLOURS, OTHER_COLOURS, save_figure
from kdprune.reporting.statistics import order_rank
from kdprune.run_record import CONFIG_FINGERPRINT, TEACHER_TEST_ACC, TEST_ACC

SIZE_PLOT = "accuracy_vs_size.png"
# Per-configuration means over distinct seeds (a seed's duplicate runs averaged first).
MEANS = (
    TEST_ACC,
    "int8_test_acc",
    "fp32_bytes",
    "onnx_file_size_bytes_int8",
    "ort_latency_ms_bs1_fp32",
    "ort_latency_ms_bs1_int8",
    "ort_latency_ms_bs64_fp32",
    "ort_latency_ms_bs64_int8",
    "ort_latency_ms_bs64_dense",
    "dense_bytes",
    TEACHER_TEST_ACC,
)
MARKERS = {"fp32": "o", "ptq": "s", "qat": "^"}


def has_int8(runs: pd.DataFrame) -> bool:
    """Whether any run quantized its model."""
    return "int8_test_acc" in runs and bool(runs["int8_test_acc"].notna().any())


def _column(runs: pd.DataFrame, name: str, fallback: str) -> pd.Series:
    own = runs[name] if name in runs else pd.Series(np.nan, index=runs.index)
    return own.fillna(runs[fallback]) if fallback in runs else own


def int8_points(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: order, quantize stage, mean FP32 / INT8 accuracy, sizes (the
    ONNX files where written, else model.pt / dense.pt) and latencies."""
    data = runs.assign(
        fp32_bytes=_column(runs, "onnx_file_size_bytes_fp32", "file_size_bytes"),
        dense_bytes=_column(runs, "onnx_file_size_bytes_dense", "dense_file_size_bytes"),
        quantize=runs["quantize"].fillna("none") if "quantize" in runs else "none",
    )
    present = [c for c in MEANS if c in data]
    per_seed = data.groupby([CONFIG_FINGERPRINT, "seed"], dropna=False)[present].mean()
    means = per_seed.groupby(CONFIG_FINGERPRINT).mean()
    means["n_seeds"] = per_seed.groupby(CONFIG_FINGERPRINT).size()
    first = data.groupby(CONFIG_FINGERPRINT)[["order", "quantize", "target_ratio"]].first()
    points = first.join(means).reset_index()
    for column in MEANS:
        if column not in points:
            points[column] = np.nan
    return points.sort_values(["quantize", "order"], key=lambda c: c.map(str)).reset_index(
        drop=True
    )


def _colours(points: pd.DataFrame) -> dict[str, str]:
    spare = iter(OTHER_COLOURS * 10)
    return {o: ORDER_COLOURS.get(o) or next(spare) for o in sorted(points["order"].unique())}


def _draw(ax: Axes, points: pd.DataFrame, x_fp32: str, x_int8: str) -> None:
    """Each configuration's FP32 point, its INT8 point, and a thin line between them."""
    colours = _colours(points)
    for _, p in points.iterrows():
        colour = colours[p["order"]]
        ax.scatter(p[x_fp32], p[TEST_ACC], color=colour, marker=MARKERS["fp32"], s=36,
                   facecolors="none", linewidths=1.5)  # fmt: skip
        if p["quantize"] in MARKERS and not np.isnan(p[x_int8]):
            ax.scatter(p[x_int8], p["int8_test_acc"], color=colour, marker=MARKERS[p["quantize"]],
                       s=40)  # fmt: skip
            ax.plot([p[x_fp32], p[x_int8]], [p[TEST_ACC], p["int8_test_acc"]], color=colour,
                    alpha=0.35, linewidth=1)  # fmt: skip


def _legend(ax: Axes, points: pd.DataFrame) -> None:
    for order, colour in sorted(_colours(points).items(), key=lambda oc: order_rank(oc[0])):
        ax.plot([], [], color=colour, linewidth=6, label=order)
    ax.scatter([], [], color="0.3", marker="o", facecolors="none", label="FP32 compressed")
    for stage in ("ptq", "qat"):
        if (points["quantize"] == stage).any():
            ax.scatter([], [], color="0.3", marker=MARKERS[stage], label=f"INT8 ({stage})")
    ax.scatter([], [], color="0.2", marker="*", s=90, label="dense FP32 (teacher's accuracy)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _dense(ax: Axes, points: pd.DataFrame, x: str) -> None:
    dense = points.dropna(subset=[x, TEACHER_TEST_ACC])
    if len(dense):
        ax.scatter(dense[x].mean(), dense[TEACHER_TEST_ACC].mean(), color="0.2", marker="*",
                   s=90, zorder=3)  # fmt: skip


def _log_axis(ax: Axes, label) -> None:
    """A log x axis with ticks at 1, 2 and 5 times the powers of ten, labelled by `label`."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(label)
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_size(runs: pd.DataFrame, path: Path) -> Path:
    """Test accuracy against file size (left) and ONNX Runtime batch-64 latency (right): an FP32
    and an INT8 point per configuration (means over seeds), and the dense FP32 model."""
    points = int8_points(runs)
    fig = Figure(figsize=(12, 5), layout="constrained")
    size_ax, ms_ax = fig.subplots(1, 2)
    _draw(size_ax, points, "fp32_bytes", "onnx_file_size_bytes_int8")
    _dense(size_ax, points, "dense_bytes")
    _log_axis(size_ax, lambda v, _: f"{v / 1e3:.3g} kB")
    size_ax.set_xlabel("model file size (ONNX where written, else model.pt), log scale")
    quantized = points[points["quantize"].isin(["ptq", "qat"])]
    _draw(ms_ax, quantized, "ort_latency_ms_bs64_fp32", "ort_latency_ms_bs64_int8")
    _dense(ms_ax, quantized, "ort_latency_ms_bs64_dense")
    _log_axis(ms_ax, lambda v, _: f"{v:.3g}")
    ms_ax.set_xlabel("ONNX Runtime latency, batch 64 (ms; quantized runs), log scale")
    for ax in (size_ax, ms_ax):
        ax.set_ylabel("test accuracy")
        ax.grid(True, alpha=0.3)
    _legend(ms_ax, points)
    fig.suptitle("Test accuracy vs size and latency: FP32 and INT8", fontsize=13,
                 fontweight="bold")  # fmt: skip
    return save_figure(fig, path)


def _times(before: float, after: float) -> str:
    if np.isnan(before) or np.isnan(after) or not after:
        return "n/a"
    return f"{before:.3g} → {after:.3g} ({before / after:.2f}×)"


def quantization_lines(runs: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """The Quantization section: per quantized configuration, FP32 vs INT8 accuracy, ONNX file
    size and ONNX Runtime latency (means over seeds)."""
    names = config_names(summary)
    points = int8_points(runs)
    rows = []
    for _, p in points[points["quantize"].isin(["ptq", "qat"])].iterrows():
        rows.append([
            names.get(p[CONFIG_FINGERPRINT], p[CONFIG_FINGERPRINT]), f"{p['target_ratio']:g}",
            int(p["n_seeds"]), f"{p[TEST_ACC]:.4f}", f"{p['int8_test_acc']:.4f}",
            f"{100 * (p['int8_test_acc'] - p[TEST_ACC]):+.2f}",
            _times(p["fp32_bytes"] / 1e3, p["onnx_file_size_bytes_int8"] / 1e3),
            _times(p["ort_latency_ms_bs1_fp32"], p["ort_latency_ms_bs1_int8"]),
            _times(p["ort_latency_ms_bs64_fp32"], p["ort_latency_ms_bs64_int8"]),
        ])  # fmt: skip
    header = [
        *("configuration", "target", "seeds", "FP32 test acc", "INT8 test acc", "Δ pts"),
        *("ONNX kB FP32 → INT8", "ORT ms bs1 FP32 → INT8", "ORT ms bs64 FP32 → INT8"),
    ]
    return [
        "## Quantization",
        "",
        "Configurations with `quantize=ptq` or `qat`: the compressed model (model.pt, FP32) "
        "against its INT8 model (model.int8.onnx), means over seeds. INT8 accuracy is ONNX "
        "Runtime's on the test split; file sizes are the ONNX files (debug metadata stripped); "
        "latency is ONNX Runtime's with `measure.threads` threads. For `qat`, the FP32 model is "
        "the one before its QAT epochs (taken from its last stage). See "
        f"[`{SIZE_PLOT}`]({SIZE_PLOT}).",
        "",
        *md_table(header, rows),
    ]
