"""The tables of a sweep's summary (`kdprune.tracking` logs them to W&B), built once from its runs.

Rows are the report's ledger rows (`runs.ledger_row`), and the ledger, its summary over
configurations and the paired verdicts are built once per sweep by the report's own functions,
so the summary groups, pairs and judges runs exactly as `kdprune report` does. Every table is
plain data: column names and rows of JSON cells (NaN as None).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from kdprune.reporting.config_groups import config_names, group_titles
from kdprune.reporting.plots import accuracy_points
from kdprune.reporting.quantized import int8_points
from kdprune.reporting.runs import ledger_frame, ledger_row
from kdprune.reporting.statistics import pareto_mask, summarise
from kdprune.reporting.verdicts import A_BETTER, B_BETTER, verdicts
from kdprune.results import METRICS_FILE, STATUS_OK, read_metrics, run_status
from kdprune.run_record import (
    CONFIG_FINGERPRINT,
    MACS_SPEEDUP,
    TEACHER_TEST_ACC,
    TEST_ACC,
    VAL_ACC,
    WEIGHT_SPARSITY,
)

log = logging.getLogger("kdprune")

TABLE_COLUMNS = (
    "order",
    "kd",
    "method",
    "target_ratio",
    WEIGHT_SPARSITY,
    "params_removed_fraction",
    MACS_SPEEDUP,
    VAL_ACC,
    TEST_ACC,
    "seed",
    CONFIG_FINGERPRINT,
    "run",
)
# A point per configuration: mean test accuracy over its distinct seeds, 95% t interval.
CURVE_COLUMNS = ("series", WEIGHT_SPARSITY, TEST_ACC, "ci_low", "ci_high", "n_seeds")
VERDICT_COLUMNS = (
    "level",
    "a",
    "b",
    "n",
    "mean_diff",
    "ci_low",
    "ci_high",
    "verdict",
    "a_macs_speedup",
    "b_macs_speedup",
    "matched",
)
TEACHER_SERIES = "teacher"
# Runs that quantized their model (quantize=ptq|qat): FP32 vs INT8 of each.
INT8_COLUMNS = (
    "order",
    "kd",
    "quantize",
    "target_ratio",
    TEST_ACC,
    "int8_test_acc",
    "onnx_file_size_bytes_fp32",
    "onnx_file_size_bytes_int8",
    "int8_size_reduction",
    "int8_speedup_bs1",
    "int8_speedup_bs64",
    "seed",
    CONFIG_FINGERPRINT,
    "run",
)
# A point per configuration and precision: test accuracy against model file size.
SIZE_COLUMNS = ("series", "precision", "file_size_kb", TEST_ACC)
PARETO_KEYS = (VAL_ACC, MACS_SPEEDUP)  # both maximised


@dataclass(frozen=True)
class Table:
    """Column names and rows of JSON cells, in the columns' order."""

    columns: tuple[str, ...]
    data: list[list[Any]] = field(default_factory=list)


@dataclass(frozen=True)
class SweepTables:
    """Everything a sweep's summary shows."""

    runs: Table  # every finished run (TABLE_COLUMNS)
    curve: Table  # test accuracy vs weight sparsity, a point per configuration (CURVE_COLUMNS)
    verdicts: Table  # the report's paired verdicts, `level` the compression level
    speedup_runs: Table  # the runs that have a MACs speed-up (TABLE_COLUMNS)
    pareto_front: Table  # of those, the ones no other beats on val_acc and MACs speed-up
    int8_runs: Table  # the runs that quantized: FP32 vs INT8 (INT8_COLUMNS)
    sizes: Table  # when runs quantized: test accuracy vs file size, FP32 and INT8 points
    headline: dict[str, Any]  # runs, best_val_acc, comparisons, differences_detected


def _job_order(path: Path) -> tuple[tuple[int, int | str], ...]:
    # job folders are numbered: 2 before 10
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in path.parts)


def sweep_rows(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One ledger row per finished run under `sweep_dir` (every metrics.json, read by
    `read_metrics`), `run` being the run folder relative to the sweep."""
    sweep_dir = Path(sweep_dir)
    rows = []
    for path in sorted(sweep_dir.rglob(METRICS_FILE), key=_job_order):
        try:
            metrics = read_metrics(path)
        except (OSError, json.JSONDecodeError) as err:
            log.warning("sweep summary: skipping %s: %s", path, err)
            continue
        if run_status(metrics) != STATUS_OK:
            continue  # a diverged run has no accuracy to log
        row = ledger_row(metrics, path.parent)
        row["run"] = str(path.parent.relative_to(sweep_dir))
        rows.append(row)
    return rows


def _cell(value: Any) -> Any:
    """A table cell: NaN as None (W&B tables take JSON), numpy scalars as Python ones."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def table_data(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = TABLE_COLUMNS
) -> list[list[Any]]:
    """The rows as lists in `columns` order."""
    return [[_cell(row.get(key)) for key in columns] for row in rows]


def pareto_front(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows no other row beats on val_acc and MACs speed-up (both maximised; rows without
    either left out), sorted by MACs speed-up."""
    usable = [r for r in rows if all(r.get(k) is not None for k in PARETO_KEYS)]
    if not usable:
        return []
    y, x = ([r[k] for r in usable] for k in PARETO_KEYS)
    keep = pareto_mask(x, y, (True, True))
    front = [r for r, kept in zip(usable, keep, strict=True) if kept]
    return sorted(front, key=lambda r: r[PARETO_KEYS[-1]])


def _curve(runs: pd.DataFrame, summary: pd.DataFrame) -> list[list[Any]]:
    """Test accuracy vs achieved weight sparsity (CURVE_COLUMNS): a point per configuration
    (distinct seeds averaged, 95% t interval), a series per configuration without its target,
    named by what sets it apart; sorted by series and sparsity; plus a flat `teacher` series at
    the teacher's test accuracy across the sparsity range."""
    found = accuracy_points(summary, WEIGHT_SPARSITY).dropna(subset=["x"])
    points = sorted(
        (
            [_cell(p.series), _cell(p.x), _cell(p.mean), _cell(p.low), _cell(p.high), p.n_seeds]
            for p in found.itertuples()
        ),
        key=lambda p: (p[0], p[1]),
    )
    teacher = runs[TEACHER_TEST_ACC].dropna()
    if len(teacher) and points:
        accuracy = float(teacher.mean())
        low, high = min(p[1] for p in points), max(p[1] for p in points)
        points += [[TEACHER_SERIES, x, accuracy, None, None, None] for x in (low, high)]
    return points


def _verdicts(runs: pd.DataFrame, summary: pd.DataFrame) -> list[list[Any]]:
    """The paired verdicts of the report (VERDICT_COLUMNS), `level` the compression level;
    without the seeds × images columns, which no W&B table shows (they load the data set)."""
    table = verdicts(runs, summary, images=False)
    table["level"] = table["pairing_key"].map(group_titles(summary))
    return [[_cell(row[k]) for k in VERDICT_COLUMNS] for _, row in table.iterrows()]


def _sizes(runs: pd.DataFrame, summary: pd.DataFrame) -> list[list[Any]]:
    """Test accuracy against file size (SIZE_COLUMNS): each configuration's FP32 point (its ONNX
    file where written, else model.pt) and, when it quantized, its INT8 point; means over seeds."""
    names = config_names(summary)
    out = []
    for p in int8_points(runs).itertuples():
        name = names.get(p.config_fingerprint, p.config_fingerprint)
        out.append([name, "FP32", _cell(p.fp32_bytes / 1e3), _cell(p.test_acc)])
        if p.quantize in ("ptq", "qat"):
            kb, acc = p.onnx_file_size_bytes_int8 / 1e3, p.int8_test_acc
            out.append([name, f"INT8 ({p.quantize})", _cell(kb), _cell(acc)])
    return out


def _headline(rows: Sequence[Mapping[str, Any]], said: list[list[Any]]) -> dict[str, Any]:
    """How many runs, the best validation accuracy, how many paired comparisons and how many of
    them detected a difference (`said`: the verdict rows)."""
    accuracies = [r[VAL_ACC] for r in rows if r.get(VAL_ACC) is not None]
    words = [row[VERDICT_COLUMNS.index("verdict")] for row in said]
    return {
        "runs": len(rows),
        "best_val_acc": max(accuracies) if accuracies else None,
        "comparisons": len(words),
        "differences_detected": sum(w in (A_BETTER, B_BETTER) for w in words),
    }


def _ledger(rows: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The report's ledger of the runs that have a test accuracy, and its summary over
    configurations; None when no run has one."""
    if not rows:
        return None
    runs = ledger_frame([dict(r) for r in rows]).dropna(subset=[TEST_ACC])
    return (runs, summarise(runs)) if len(runs) else None


def sweep_tables(rows: Sequence[Mapping[str, Any]]) -> SweepTables:
    """Every table of the sweep's summary from its ledger rows (`sweep_rows`): the ledger, its
    summary over configurations and the verdicts are built once, here."""
    ledger = _ledger(rows)
    quantized = [r for r in rows if r.get("int8_test_acc") is not None]
    speedup = [r for r in rows if r.get(MACS_SPEEDUP) is not None]
    said = _verdicts(*ledger) if ledger else []
    return SweepTables(
        runs=Table(TABLE_COLUMNS, table_data(rows)),
        curve=Table(CURVE_COLUMNS, _curve(*ledger) if ledger else []),
        verdicts=Table(VERDICT_COLUMNS, said),
        speedup_runs=Table(TABLE_COLUMNS, table_data(speedup)),
        pareto_front=Table(TABLE_COLUMNS, table_data(pareto_front(speedup))),
        int8_runs=Table(INT8_COLUMNS, table_data(quantized, INT8_COLUMNS)),
        sizes=Table(SIZE_COLUMNS, _sizes(*ledger) if ledger and quantized else []),
        headline=_headline(rows, said),
    )
