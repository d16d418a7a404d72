"""The ledger of runs: one row per `metrics.json` below a folder, and its CSV file.

Runs are read only through `kdprune.results.read_metrics`. Each row carries the run's identity
(`config_fingerprint`, `pairing_key`, ... from `configs.run_identity`), its starting point and
epochs flattened (`start_weights`, `epochs_student`, ...) and `weight_sparsity` (estimated for
runs that predate it, flagged by `weight_sparsity_estimated`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from kdprune.errors import ConfigError
from kdprune.reporting.config_groups import run_identity
from kdprune.reporting.statistics import LABEL_KEYS, STAT_COLUMNS, sort_runs
from kdprune.results import METRICS_FILE, STATUS_OK, atomic_write, read_metrics, run_status
from kdprune.run_record import (
    CONFIG_FINGERPRINT,
    HISTORY,
    ORDER,
    TEACHER_TEST_ACC,
    TIMINGS,
    VAL_ACC,
    WEIGHT_SPARSITY,
)

CSV_FILE = "pruning_comparison.csv"
# Derived and trial columns, in this sequence after the ledger keys and timings.
TAIL_COLUMNS = [
    CONFIG_FINGERPRINT,
    "pairing_key",
    "series_key",
    "schedule_key",
    "kd_key",
    "order_key",
    "kd_pair_key",
    "teacher_key",
    "fingerprint_from",
    "weight_sparsity_estimated",
    "student_epochs",
    "student_stages",
    "lr_cycles",
    "optimizer_resets",
    "selecting_stages",
    "trial_number",
    "trial_state",
    "overrides",
    "run_dir",
]
# Kept in the DataFrame for the report, left out of the CSV (long JSON text).
NOT_IN_CSV = ("config_json",)
# Nested metrics.json keys flattened into ledger columns: start.weights -> start_weights.
NESTED = {
    "start": ("init", "weights", "inherited_epochs"),
    "epochs": ("inherited", "student", "total"),
}


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def read_yaml(path: Path) -> Any:
    """The YAML file's content, or None when it is missing or unreadable."""
    try:
        with open(path) as fh:
            return yaml.safe_load(fh)
    except (OSError, yaml.YAMLError):
        return None


def estimated_weight_sparsity(metrics: dict[str, Any]) -> float | None:
    """For runs without `weight_sparsity`: 1 - nonzero_fraction * params_after / params_before,
    the removed or zero fraction of the dense weights (biases and norms counted as weights)."""
    removed = metrics.get("params_removed_fraction")
    if not isinstance(removed, int | float):
        return None
    nonzero = metrics.get("nonzero_fraction")
    nonzero = nonzero if isinstance(nonzero, int | float) else 1.0
    return 1.0 - nonzero * (1.0 - removed)


def _flat_nested(metrics: dict[str, Any]) -> dict[str, Any]:
    """`start` and `epochs` as columns (`start_weights`, `epochs_student`, ...), None if absent."""
    out = {}
    for name, keys in NESTED.items():
        value = metrics.get(name)
        value = value if isinstance(value, dict) else {}
        out.update({f"{name}_{k}": value.get(k) for k in keys})
    return out


def lr_cycles(history: list[dict[str, Any]]) -> int | None:
    """Student stages in a history: each `fit` starts a fresh optimizer and learning-rate
    schedule, and numbers its epochs from 1 (a new stage name or epoch 1 starts one)."""
    student = [h for h in history if h.get("stage") != "teacher"]
    if not student:
        return None
    starts = [
        i == 0 or h.get("epoch") == 1 or h.get("stage") != student[i - 1].get("stage")
        for i, h in enumerate(student)
    ]
    return sum(starts)


def _student(history: list[dict[str, Any]], key: str) -> list[dict[str, Any]] | None:
    """The student epochs of a history, None when there are none or one lacks `key` (a run
    written before kdprune recorded it)."""
    student = [h for h in history if h.get("stage") != "teacher"]
    return student if student and all(key in h for h in student) else None


def optimizer_resets(history: list[dict[str, Any]]) -> int | None:
    """Optimizers rebuilt inside the student's stages (a pruning step that changed the
    architecture mid-stage), beyond the one each stage starts with; None: not recorded."""
    student = _student(history, "optimizer_resets")
    return None if student is None else sum(int(h["optimizer_resets"]) for h in student)


def selecting_stages(history: list[dict[str, Any]]) -> int | None:
    """Student stages that could end on their best validation epoch (`selectable`: not with
    select_epoch=last, nor while step hooks change the architecture); None: not recorded."""
    student = _student(history, "selectable")
    if student is None:
        return None
    stages = {h.get("stage") for h in student if h["selectable"]}
    return len(stages)


def ledger_row(metrics: dict[str, Any], run_dir: str | os.PathLike) -> dict[str, Any]:
    """One CSV row: the scalar keys of a metrics dict, the run's identity, `start_*`, `epochs_*`,
    `time_<stage>`, `student_epochs`, `lr_cycles`, `optimizer_resets` and `selecting_stages`
    (from its history) and run_dir."""
    row = {k: v for k, v in metrics.items() if k not in (TIMINGS, HISTORY) and _is_scalar(v)}
    row.update(_flat_nested(metrics))
    row.update(run_identity(metrics))
    row["weight_sparsity_estimated"] = not isinstance(metrics.get(WEIGHT_SPARSITY), int | float)
    if row["weight_sparsity_estimated"]:
        row[WEIGHT_SPARSITY] = estimated_weight_sparsity(metrics)
    for stage, seconds in (metrics.get(TIMINGS) or {}).items():
        row[f"time_{stage}"] = seconds
    epochs: dict[str, int] = {}
    for entry in metrics.get(HISTORY) or []:
        if entry.get("stage") != "teacher":
            epochs[entry.get("stage", "?")] = epochs.get(entry.get("stage", "?"), 0) + 1
    row["student_epochs"] = sum(epochs.values())
    row["student_stages"] = " + ".join(f"{s} {n}" for s, n in epochs.items()) or "none"
    row["lr_cycles"] = lr_cycles(metrics.get(HISTORY) or [])
    row["optimizer_resets"] = optimizer_resets(metrics.get(HISTORY) or [])
    row["selecting_stages"] = selecting_stages(metrics.get(HISTORY) or [])
    overrides = read_yaml(Path(run_dir) / ".hydra" / "overrides.yaml")
    if isinstance(overrides, list):
        row["overrides"] = " ".join(str(o) for o in overrides)
    row["run_dir"] = str(run_dir)
    return row


def _column_order(df: pd.DataFrame) -> list[str]:
    """Ledger keys first (as they appear in metrics.json), then timings, derived, trial columns."""
    keys = [c for c in df.columns if not c.startswith(("time_", "value_", "param_"))]
    columns = [c for c in keys if c not in TAIL_COLUMNS]
    columns += [c for c in df.columns if c.startswith("time_")]
    columns += [c for c in TAIL_COLUMNS if c in df and c not in ("overrides", "run_dir")]
    columns += [c for c in df.columns if c.startswith(("value_", "param_"))]
    columns += [c for c in ("overrides", "run_dir") if c in df]
    return columns


def ledger_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The ledger rows as a DataFrame: every configuration and statistic column present, sorted."""
    df = pd.DataFrame(rows)
    for key in LABEL_KEYS:
        if key not in df:
            df[key] = "?" if key != "target_ratio" else np.nan
        elif key != "target_ratio":
            df[key] = df[key].fillna("?").astype(str)
    for key in [*STAT_COLUMNS, TEACHER_TEST_ACC, "seed"]:
        if key not in df:
            df[key] = np.nan
    for key in ["select_epoch", *(f"{n}_{k}" for n, keys in NESTED.items() for k in keys)]:
        if key not in df:
            df[key] = None
    return sort_runs(df[_column_order(df)], [*LABEL_KEYS, "seed", "run_dir"])


def load_run(path: Path) -> dict[str, Any] | None:
    """A run's metrics, or None for a diverged run's (quietly) or a file that is not a finished
    run's (with a warning)."""
    try:
        metrics = read_metrics(path)
    except (OSError, json.JSONDecodeError) as err:
        print(f"kdprune: warning: skipping {path}: {err}", file=sys.stderr)
        return None
    if isinstance(metrics, dict) and run_status(metrics) != STATUS_OK:
        return None  # a diverged run: listed apart (reporting/diverged.py), in no statistic
    if not isinstance(metrics, dict) or ORDER not in metrics or VAL_ACC not in metrics:
        print(f"kdprune: warning: skipping {path}: not a run's metrics", file=sys.stderr)
        return None
    return metrics


def collect_runs(folder: str | os.PathLike) -> pd.DataFrame:
    """One row per `metrics.json` found below `folder` (a multirun, or any tree of runs)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder.")
    rows = []
    for path in sorted(folder.rglob(METRICS_FILE)):
        metrics = load_run(path)
        if metrics is not None:
            rows.append(ledger_row(metrics, path.parent))
    if not rows:
        raise ConfigError(f"no {METRICS_FILE} found below {folder}.")
    return ledger_frame(rows)


def write_csv(runs: pd.DataFrame, path: Path) -> Path:
    """The ledger CSV: one row per run, run_dir last (the configuration's JSON left out)."""
    columns = [c for c in runs.columns if c not in ("run_dir", *NOT_IN_CSV)] + ["run_dir"]
    text = runs[columns].to_csv(index=False)
    return atomic_write(path, lambda fh: fh.write(text.encode()))
