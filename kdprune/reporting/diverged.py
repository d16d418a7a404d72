"""The report's "Diverged runs" section: configurations whose loss became NaN or infinite.

A diverged run is a result (this configuration does not train), but it has no accuracy: it is
listed here and kept out of every statistic, table and plot (`runs.load_run` skips it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kdprune.results import atomic_write, diverged_runs, where_diverged
from kdprune.run_record import CONFIG_FINGERPRINT

TITLE = "## Diverged runs"


def diverged_lines(found: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    """A markdown table of diverged runs, (run folder, metrics) each (none: no lines)."""
    if not found:
        return []
    lines = [
        TITLE,
        "",
        f"{len(found)} run(s) stopped when their loss became NaN or infinite; they are in no "
        "statistic above.",
        "",
        "| run | order | model | seed | where | config |",
        "|---|---|---|---|---|---|",
    ]
    for run_dir, m in found:
        lines.append(
            f"| `{run_dir}` | {m.get('order', '?')} | {m.get('model', '?')} | "
            f"{m.get('seed', '?')} | {where_diverged(m)} | `{m.get(CONFIG_FINGERPRINT, '?')}` |"
        )
    return lines


def add_diverged_runs(report_file: str | os.PathLike, folder: str | os.PathLike) -> int:
    """Append the "Diverged runs" section for the runs below `folder` to a written report;
    returns how many runs it lists."""
    found = diverged_runs(folder)
    if found:
        report_file = Path(report_file)
        lines = diverged_lines(found)
        text = report_file.read_text().rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
        atomic_write(report_file, lambda fh: fh.write(text.encode()))
    return len(found)
