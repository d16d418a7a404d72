"""(c) A 15-run orders sweep: teacher trainings and overhead share, and its Markdown."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.markdown import met_cell, pct, target_cell
from benchmarks.measure import figure
from benchmarks.paths import ROOT
from benchmarks.sizes import Sizes
from kdprune.reporting.markdown import md_table


def sweep_command(sizes: Sizes, folder: Path) -> list[str]:
    """The orders sweep as a user would run it, with outputs and teacher cache in `folder`."""
    return [
        sys.executable,
        "-m",
        "kdprune",
        "-m",
        "+sweep=orders",
        f"prune_method.ratio={sizes.sweep_ratios}",
        "kd=hinton",
        *sizes.sweep_overrides,
        f"trainer.threads={sizes.threads}",
        f"paths.data_dir={sizes.data_dir}",
        f"paths.cache_dir={folder / 'cache'}",
        f"hydra.sweep.dir={folder / 'sweep'}",
    ]


def sweep_overhead(wall: float, runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Split a sweep's wall time into in-run stage time and overhead (everything else)."""
    totals = [float(r["timings"]["total"]) for r in runs]
    stages = [sum(float(v) for k, v in r["timings"].items() if k != "total") for r in runs]
    return {
        "wall_s": wall,
        "stages_s": sum(stages),
        "overhead_s": wall - sum(stages),
        "outside_runs_s": wall - sum(totals),  # process start, imports, Hydra, between runs
        "untimed_in_runs_s": sum(totals) - sum(stages),  # data loading, evaluation, saving
    }


def stage_sums(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Each timing of the runs' metrics.json, summed over the runs."""
    sums: dict[str, float] = {}
    for run in runs:
        for key, value in run["timings"].items():
            sums[key] = sums.get(key, 0.0) + float(value)
    return sums


def run_sweep(cmd: list[str], folder: Path) -> tuple[float, list[dict[str, Any]]]:
    """Run the sweep `cmd` writes to `folder`; its wall seconds and its runs' metrics.json."""
    from kdprune.results import METRICS_FILE

    env = {**os.environ, "WANDB_MODE": "disabled"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"the sweep failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    files = sorted((folder / "sweep").glob(f"*/{METRICS_FILE}"))
    return wall, [json.loads(f.read_text()) for f in files]


def measure(sizes: Sizes) -> dict[str, Any]:
    """(c) A 15-run orders sweep in a fresh process and cache: teacher trainings and overhead."""
    folder = Path(tempfile.mkdtemp(prefix="kdprune-bench-sweep-"))
    try:
        cmd = sweep_command(sizes, folder)
        wall, runs = run_sweep(cmd, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    split = sweep_overhead(wall, runs)
    trainings = sum(r.get("teacher_source") == "trained" for r in runs)
    return figure(
        "sweep",
        {"teacher_trainings": float(trainings), "overhead_share": split["overhead_s"] / wall},
        runs=len(runs),
        split=split,
        stage_seconds=stage_sums(runs),
        setup="`" + " ".join(cmd[2:-3]) + "` (a fresh teacher cache, one process)",
    )


def summary(f: dict[str, Any]) -> list[list[str]]:
    """(c)'s rows of the summary table: figure, measured, target, met."""
    r, t = f["ratios"], f["targets"]
    return [
        [
            f"(c) teacher trainings in the {f['runs']}-run orders sweep",
            f"{r['teacher_trainings']:.0f}",
            target_cell(t["teacher_trainings"]),
            met_cell(f, "teacher_trainings"),
        ],
        [
            "(c) sweep overhead / sweep wall time",
            pct(r["overhead_share"]),
            target_cell(t["overhead_share"], "%"),
            met_cell(f, "overhead_share"),
        ],
    ]


def section(f: dict[str, Any]) -> list[str]:
    """(c) details."""
    stages = ", ".join(
        f"{k} {v:.1f}"
        for k, v in sorted(f["stage_seconds"].items(), key=lambda kv: -kv[1])
        if k != "total"
    )
    return [
        "## (c) A 15-run orders sweep",
        "",
        f"Command: {f['setup']}; {f['runs']} runs. Teacher trainings (`teacher_source == "
        f'"trained"` in the runs\' metrics.json): **{f["ratios"]["teacher_trainings"]:.0f}**.',
        "",
        "Overhead = sweep wall time − the sum over runs of the stage timings in metrics.json "
        "(`timings` without `total`):",
        "",
        *md_table(["", "seconds", "share of wall time"], _split_rows(f)),
        "",
        f"Stage seconds summed over the runs: {stages}. Reproduce: `{f['command']}`.",
    ]


def _split_rows(f: dict[str, Any]) -> list[list[str]]:
    """The wall time split: wall, stages, overhead and the overhead's two parts."""
    s = f["split"]
    return [
        ["sweep wall time", f"{s['wall_s']:.1f}", "100%"],
        [
            "in-run stages (teacher, training, pruning, measuring, ...)",
            f"{s['stages_s']:.1f}",
            pct(s["stages_s"] / s["wall_s"]),
        ],
        [
            "**overhead**",
            f"{s['overhead_s']:.1f}",
            f"**{pct(f['ratios']['overhead_share'])}**",
        ],
        [
            "… outside the runs: process start, imports, Hydra composition, between runs",
            f"{s['outside_runs_s']:.1f}",
            pct(s["outside_runs_s"] / s["wall_s"]),
        ],
        [
            "… inside runs, untimed: data loading, evaluation, checkpoints, logging",
            f"{s['untimed_in_runs_s']:.1f}",
            pct(s["untimed_in_runs_s"] / s["wall_s"]),
        ],
    ]
