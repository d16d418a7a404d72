"""BENCHMARKS.md from a results dict: the header, the summary table, each figure's section."""

from __future__ import annotations

from typing import Any

from benchmarks.figures import REGISTRY
from benchmarks.machine import cpu_label
from benchmarks.markdown import load_cell
from benchmarks.measure import reproduce
from kdprune.reporting.markdown import md_table

SUMMARY_HEADER = ["figure", "measured", "target", "met", "CPU", "load avg", "reproduce"]


def render(results: dict[str, Any]) -> str:
    """BENCHMARKS.md from a results dict."""
    meta, figures = results["meta"], results["figures"]
    lines = [
        *header(meta),
        "",
        "## Summary",
        "",
        *md_table(SUMMARY_HEADER, summary_rows(figures)),
    ]
    for name, fig in REGISTRY.items():
        if name in figures:
            record = figures[name]
            lines += ["", *on_cpu(fig.section(record), record)]
            if record["commit"] != meta["commit"] or record["measured"] != meta["date"]:
                lines.append(
                    f"\n(Measured earlier: {record['measured']}, commit {record['commit']}.)"
                )
        elif fig.title:
            lines += ["", f"## {fig.title}", "", f"Not measured yet: `{reproduce(name)}`."]
    return "\n".join(lines) + "\n"


# What is known of the GPU path: replace with `make gpu-check`'s results (card, date, commit) once
# it has run on a GPU.
GPU_STATUS = (
    "**The GPU path is untested.** kdprune's CUDA path (bf16 autocast, channels_last, "
    "GPU-resident data, NCCL for `torchrun`) has never run on a GPU: no device has been lent "
    "to this project yet. `make gpu-check` checks it on one and writes what it found to "
    "`outputs/gpu_check/<date>/gpu_check.json`; its results (card, date, commit) go here once "
    "it has run."
)


def header(meta: dict[str, Any]) -> list[str]:
    """The title, how the figures are measured, and the commit, date and machine."""
    m = meta["machine"]
    return [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m benchmarks`); the same numbers, with every sample, "
        "are in `benchmarks/results.json`. Each figure is a ratio of two measurements taken in "
        "one run: the two sides are measured interleaved (A, B, A, B, ...) and compared by their "
        "medians. CPU timings run with `torch.set_num_threads(N)` and ONNX Runtime with N "
        "intra-op threads, N given below. The load average (1 / 5 / 15 min, before → after each "
        "figure) shows what else ran on the machine meanwhile.",
        "",
        f"- **commit** `{meta['commit']}`"
        + (" (plus uncommitted changes)" if meta["dirty"] else ""),
        f"- **measured** {meta['date']}",
        f"- **machine** {cpu_label(m)}, {m['cores']} cores, torch {m['torch']}, "
        f"{m['threads']} torch thread(s), onnxruntime {m['onnxruntime']}, Python {m['python']}, "
        + (f"CUDA device {m['cuda']}" if m["cuda"] else "no CUDA device")
        + (
            f", glibc keeps freed blocks up to {m['keep_freed_memory_mb']} MiB "
            "(`trainer.keep_freed_memory_mb`, as in every kdprune run)"
            if m.get("keep_freed_memory_mb")
            else ""
        ),
        "",
        GPU_STATUS,
    ]


def on_cpu(section: list[str], record: dict[str, Any]) -> list[str]:
    """A figure's section with the CPU it was measured on named in its heading: timings from
    different CPUs are different figures."""
    heading, *rest = section
    return [f"{heading} — on {cpu_label(record['machine'])}", *rest]


def summary_rows(figures: dict[str, Any]) -> list[list[str]]:
    """The summary table's rows: figure, measured, target, met, load, how to reproduce."""
    rows = []
    for name, fig in REGISTRY.items():
        if name in figures:
            record = figures[name]
            tail = [cpu_label(record["machine"]), load_cell(record), f"`{record['command']}`"]
            rows += [[*row, *tail] for row in fig.summary(record)]
    return rows
