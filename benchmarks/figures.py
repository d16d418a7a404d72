"""The eight figures, in BENCHMARKS.md's order: measure some, and merge them with the others."""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from benchmarks import (
    cuda,
    ddp,
    kd,
    latency,
    latency_report,
    latency_target,
    latency_target_report,
    quantization,
    quantization_report,
    sweep,
    training,
)
from benchmarks.machine import commit, machine
from benchmarks.measure import loadavg
from benchmarks.sizes import Sizes
from kdprune.engine import keep_freed_memory

Record = dict[str, Any]


@dataclass(frozen=True)
class Figure:
    """How a figure is measured, and its rows of the summary table and its section."""

    measure: Callable[[Sizes], Record]
    summary: Callable[[Record], list[list[str]]]  # figure, measured, target, met
    section: Callable[[Record], list[str]]
    title: str = ""  # the section's heading while results.json has no record of it yet


REGISTRY: dict[str, Figure] = {
    "training": Figure(training.measure, training.summary, training.section),
    "kd": Figure(kd.measure, kd.summary, kd.section),
    "sweep": Figure(sweep.measure, sweep.summary, sweep.section),
    "latency": Figure(latency.measure, latency_report.summary, latency_report.section),
    "cuda": Figure(cuda.measure, cuda.summary, cuda.section),
    "quantization": Figure(
        quantization.measure, quantization_report.summary, quantization_report.section
    ),
    "ddp": Figure(ddp.measure, ddp.summary, ddp.section),
    "latency_target": Figure(
        latency_target.measure,
        latency_target_report.summary,
        latency_target_report.section,
        latency_target_report.TITLE,
    ),
}
FIGURES = tuple(REGISTRY)


def run_figures(sizes: Sizes, only: Sequence[str] = FIGURES) -> dict[str, Any]:
    """Measure the chosen figures; return {"meta": ..., "figures": {name: record}}."""
    torch.set_num_threads(sizes.threads)
    kept = sizes.keep_freed_memory_mb if keep_freed_memory(sizes.keep_freed_memory_mb) else None
    started, meta = dt.datetime.now().astimezone(), {**commit(), "machine": machine(kept)}
    figures = {}
    for name in only:
        start, before = time.perf_counter(), loadavg()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        record = REGISTRY[name].measure(sizes)
        record.update(
            seconds=time.perf_counter() - start,
            loadavg_before=before,
            measured=started.isoformat(timespec="seconds"),
            **meta,
        )
        figures[name] = record
        print(
            f"bench: {name} done in {record['seconds']:.0f}s: {record['ratios']}", file=sys.stderr
        )
    meta.update(date=started.isoformat(timespec="seconds"), sizes=asdict(sizes))
    return {"meta": meta, "figures": figures}


def merge(previous: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """New figures replace old ones; figures not rerun keep their own (dated, committed) record."""
    figures = dict((previous or {}).get("figures", {}))
    figures.update(new["figures"])
    return {"meta": new["meta"], "figures": {k: figures[k] for k in FIGURES if k in figures}}
