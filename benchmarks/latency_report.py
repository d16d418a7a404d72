"""(d)'s Markdown: the summary rows per runtime and batch, and the section that explains them."""

from __future__ import annotations

from typing import Any

from benchmarks.compression import NARROW
from benchmarks.latency import RUNTIMES
from benchmarks.markdown import pct, target_cell, times
from benchmarks.targets import LATENCY, LATENCY_RATIO, met_cell
from kdprune.reporting.markdown import md_table

HEADER = [
    "model",
    "MACs cut",
    "batch",
    "runtime",
    "dense ms",
    "compressed ms",
    "measured",
    "by MACs",
    "ratio",
    "floor ms",
    "fixed ms (share of dense)",
    "narrow MACs (slower by)",
    "expected ratio",
]


def summary(f: dict[str, Any]) -> list[list[str]]:
    """(d)'s rows of the summary table, one per runtime and batch: the worst row, how many met."""
    rows = []
    for runtime in RUNTIMES:
        for batch in sorted({r["batch"] for r in f["rows"]}):
            sel = [r for r in f["rows"] if r["runtime"] == runtime and r["batch"] == batch]
            worst = min(sel, key=lambda r: r["ratio"])
            rows.append(
                [
                    f"(d) measured / MACs speed-up, {runtime}, batch {batch}: worst of "
                    f"{len(sel)} ({worst['model']} {worst['compression']})",
                    f"{worst['ratio']:.3f}",
                    target_cell(LATENCY),
                    _met(sel),
                ]
            )
    return rows


def _met(sel: list[dict[str, Any]]) -> str:
    # out of reach: missed, and the measured fixed cost and narrow kernels predict it
    why = f"expected ratio < {LATENCY_RATIO:g}, see (d)"
    return met_cell([r["ratio"] for r in sel], [r["ratio_bound"] for r in sel], LATENCY_RATIO, why)


def section(f: dict[str, Any]) -> list[str]:
    """(d) details, with the fixed per-call cost that explains a shortfall."""
    return [
        "## (d) CPU latency: measured speed-up vs MACs speed-up",
        "",
        f"Setup: {f['setup']}. MACs per image: {_widths(f)}. Target: measured speed-up "
        f"{target_cell(LATENCY)} × the MACs speed-up (Torch-Pruning's own ResNet-50 table "
        "reaches 0.57–0.66).",
        "",
        *md_table(HEADER, [_row(r) for r in f["rows"]]),
        "",
        *_explanations(f),
        *_unexplained(f["rows"]),
        f"Export a compressed model yourself: `kdprune export-onnx MODEL_FILE --out model.onnx`. "
        f"Reproduce: `{f['command']}`.",
    ]


def _row(r: dict[str, Any]) -> list[Any]:
    """One line of (d)'s table."""
    return [
        r["model"],
        r["compression"],
        r["batch"],
        r["runtime"],
        f"{r['dense_ms']:.3f}",
        f"{r['compressed_ms']:.3f}",
        times(r["measured_speedup"]),
        times(r["macs_speedup"]),
        f"**{r['ratio']:.3f}**" if r["ratio"] < LATENCY_RATIO else f"{r['ratio']:.3f}",
        f"{r['floor_ms']:.3f}",
        f"{r['fixed_ms']:.3f} ({pct(r['fixed_share'])})",
        f"{pct(r['narrow_share'])} at {r['narrow_penalty']:.2f}×" if r["narrow_share"] else "—",
        f"{r['ratio_bound']:.2f}",
    ]


def _widths(f: dict[str, Any]) -> str:
    """MACs per image of each model's variants, with the channel rounding used."""
    return "; ".join(
        f"{name}: "
        + ", ".join(
            f"{v} {c['macs'] / 1e6:.2f} MMACs"
            + (f" (round_to {c['round_to']})" if c.get("round_to") else "")
            for v, c in vs.items()
        )
        for name, vs in f["models"].items()
    )


def _explanations(f: dict[str, Any]) -> list[str]:
    """What the fixed ms, narrow MACs and expected ratio columns mean, each a paragraph."""
    wide = ", ".join(
        f"{name} {1 - floor / f['models'][name]['dense']['macs']:.0%}"
        for name, floor in f.get("wide_floor_macs", {}).items()
    )
    return [
        "*fixed ms*: what a call costs when (almost) no MACs are left, measured with a *floor* "
        "model of the same graph (every prunable layer cut to 10% of its channels, timed "
        "interleaved with the others): t0 = floor ms minus its few MACs at the rate of the line "
        "from the floor to the dense model. It is operator dispatch, memory traffic and kernels "
        "too small to fill the vector units, and it does not shrink with MACs.",
        "",
        f"*narrow MACs*: the share of the compressed model's MACs in convs that pruning made "
        f"narrower than {NARROW} channels (in or out) though they were at least {NARROW} wide "
        f"dense. This CPU's kernels work on blocks of {NARROW} channels (AVX-512: ONNX Runtime's "
        f"NCHWc convolutions, oneDNN's blocked formats), and a narrower conv runs fewer MACs per "
        f"second: *slower by* is measured in the same run, per runtime and batch, as a 3×3 conv + "
        f"ReLU {NARROW} channels wide against one {NARROW // 2} wide on the model's input-sized "
        f"maps ({NARROW // 2}-wide time × 4 / {NARROW}-wide time). Where a MACs target is "
        f"reached only with such convs, this is the runtime's cost of those widths, not of the "
        f"graph. With no conv cut below {NARROW} channels, at most this much of each model's "
        f"MACs can go: {wide}.",
        "",
        "*expected ratio*: the ratio predicted from these two measurements alone: compressed ms "
        "≈ t0 + k × (MACs + (slower by − 1) × narrow MACs), with k the dense model's ms per MAC "
        f"above t0, divided into dense ms and by the MACs speed-up. Where it is below "
        f"{LATENCY_RATIO:g}, the target is out of reach on this machine for that compressed "
        "model and batch: the fixed cost and the narrow kernels alone keep it there. Where the "
        "measured ratio is below the expected one, the compressed widths also run slower per MAC "
        "than the dense ones for other reasons; above it, faster.",
        "",
    ]


def _unexplained(rows: list[dict[str, Any]]) -> list[str]:
    """Where the time went in each row that misses though its expected ratio meets the target."""
    missed = [r for r in rows if r["ratio"] < LATENCY_RATIO <= r["ratio_bound"]]
    if not missed:
        return []
    lines = [
        f"Rows that miss although their expected ratio is {LATENCY_RATIO:g} or more, and where "
        "their time went (eager rows: torch.profiler's self CPU time per forward, dense → "
        "compressed ms):",
        "",
    ]
    for r in missed:
        split = r.get("op_ms")
        where = (
            "; ".join(
                f"{op.removeprefix('aten::')} {d:.2f} → {c:.2f} ({times(d / c) if c else '—'})"
                for op, (d, c) in split.items()
            )
            if split
            else "not profiled (ONNX Runtime)"
        )
        lines.append(
            f"- {r['model']} {r['compression']}, batch {r['batch']}, {r['runtime']}: ratio "
            f"{r['ratio']:.3f} against {r['ratio_bound']:.2f} expected, "
            f"{times(r['macs_speedup'])} fewer MACs. {where}."
        )
    return [*lines, ""]
