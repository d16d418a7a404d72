"""(h)'s Markdown: target vs achieved measured speed-up, the MACs cut, the uniform latency cut
and the latency-allocated cut side by side, per model and target."""

from __future__ import annotations

from typing import Any

from benchmarks.latency_target import CUTS
from benchmarks.markdown import target_cell, times
from benchmarks.targets import LATENCY_TARGET
from kdprune.reporting.markdown import md_table

TITLE = "(h) Latency targets: asked-for vs measured speed-up, MACs cut and latency cuts"
HEADER = [
    "model",
    "target",
    "MACs cut: achieved",
    "MACs cut: round_to",
    "latency cut: achieved",
    "latency cut: round_to",
    "latency-allocated cut: achieved",
    "latency-allocated cut: round_to",
    "dense ms",
]


def summary(f: dict[str, Any]) -> list[list[str]]:
    """(h)'s row of the summary table: the latency cut's worst closeness to its target."""
    rows = [r for r in f["rows"] if r["unit"] == "latency"]
    measured = [r for r in rows if "closeness" in r]
    refused = len(rows) - len(measured)
    if not measured:
        return [["(h) latency cut: achieved / target speed-up", "—", "", f"{refused} refused"]]
    worst = min(measured, key=lambda r: r["closeness"])
    met = sum(f["met"].values())
    return [
        [
            f"(h) latency cut: 1 − |achieved / target − 1|, worst of {len(measured)} "
            f"({worst['model']} {worst['target_speedup']:g}×)",
            f"{worst['closeness']:.3f}",
            target_cell(LATENCY_TARGET),
            ("yes" if met == len(measured) else f"{met} of {len(measured)}")
            + (f"; {refused} refused (below the floor)" if refused else ""),
        ]
    ]


def _cell(row: dict[str, Any] | None, key: str) -> str:
    if row is None:
        return "—"
    if "refused" in row:
        return "refused" if key == "achieved" else "—"
    if key == "achieved":
        return times(row["achieved"])
    return str(row.get(key))


def _rows(f: dict[str, Any]) -> list[list[str]]:
    """One line per model and target: both cuts side by side."""
    by = {(r["model"], r["target_speedup"], r["unit"], r.get("allocation", "uniform")): r
          for r in f["rows"]}  # fmt: skip
    lines = []
    for model, speedup in dict.fromkeys((r["model"], r["target_speedup"]) for r in f["rows"]):
        cuts = [by.get((model, speedup, unit, allocation)) for unit, allocation in CUTS]
        dense = next((r["dense_ms"] for r in cuts if r and "dense_ms" in r), None)
        cells = [_cell(r, key) for r in cuts for key in ("achieved", "round_to")]
        lines.append([model, times(speedup), *cells, "—" if dense is None else f"{dense:.3f}"])
    return lines


def section(f: dict[str, Any]) -> list[str]:
    """(h) details: the table, what refused, how to reproduce."""
    refusals = [f"- {r['model']} {r['target_speedup']:g}× ({r['unit']}, "
                f"{r.get('allocation', 'uniform')} allocation): {r['refused']}"
                for r in f["rows"] if "refused" in r]  # fmt: skip
    return [
        f"## {TITLE}",
        "",
        f"Setup: {f['setup']}. Target: each latency cut's measured speed-up within 10% of the "
        f"one asked for (1 − |achieved / target − 1| {target_cell(LATENCY_TARGET)}); the MACs "
        "cut is shown for comparison (its target is a MACs count, which (d) explains).",
        "",
        *md_table(HEADER, _rows(f)),
        "",
        *([*refusals, ""] if refusals else []),
        f'Cut to a latency yourself: `make run ARGS="prune_method.unit=latency '
        f'prune_method.ratio=0.5"`. Reproduce: `{f["command"]}`.',
    ]
