"""After a multirun: one W&B run per sweep holding its runs table, the accuracy-vs-sparsity chart
(a point per configuration, its 95% interval over seeds) and the paired verdicts table; for
quantized runs, their FP32-vs-INT8 table and an accuracy-vs-file-size chart.

Rows are the report's ledger rows (`kdprune.reporting.runs.ledger_row`), so the sweep summary
groups, pairs and judges runs exactly as `kdprune report` does."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from kdprune.results import METRICS_FILE, STATUS_OK, read_metrics, run_status
from kdprune.tracking.wandb_tracker import describe_run, init_run

log = logging.getLogger("kdprune")

TABLE_COLUMNS = (
    "order",
    "kd",
    "method",
    "target_ratio",
    "weight_sparsity",
    "params_removed_fraction",
    "macs_speedup",
    "val_acc",
    "test_acc",
    "seed",
    "config_fingerprint",
    "run",
)
# A point per configuration: mean test accuracy over its distinct seeds, 95% t interval.
CURVE_COLUMNS = ("series", "weight_sparsity", "test_acc", "ci_low", "ci_high", "n_seeds")
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
    "test_acc",
    "int8_test_acc",
    "onnx_file_size_bytes_fp32",
    "onnx_file_size_bytes_int8",
    "int8_size_reduction",
    "int8_speedup_bs1",
    "int8_speedup_bs64",
    "seed",
    "config_fingerprint",
    "run",
)
# A point per configuration and precision: test accuracy against model file size.
SIZE_COLUMNS = ("series", "precision", "file_size_kb", "test_acc")


def _job_order(path: Path) -> tuple[tuple[int, int | str], ...]:
    # job folders are numbered: 2 before 10
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in path.parts)


def sweep_rows(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One ledger row per finished run under `sweep_dir` (every metrics.json, read by
    `read_metrics`), `run` being the run folder relative to the sweep."""
    from kdprune.reporting.runs import ledger_row

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


def table_data(rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """The rows as lists in TABLE_COLUMNS order (a `wandb.Table`'s data)."""
    return [[_cell(row.get(key)) for key in TABLE_COLUMNS] for row in rows]


def _ledger(rows: Sequence[Mapping[str, Any]]) -> Any:
    """The rows as the report's ledger, with the summary over configurations."""
    from kdprune.reporting.runs import ledger_frame
    from kdprune.reporting.statistics import summarise

    runs = ledger_frame([dict(r) for r in rows])
    runs = runs.dropna(subset=["test_acc"])
    return runs, summarise(runs) if len(runs) else None


def curve_data(rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """Test accuracy vs achieved weight sparsity (CURVE_COLUMNS): a point per configuration
    (distinct seeds averaged, 95% t interval), a series per configuration without its target,
    named by what sets it apart; sorted by series and sparsity; plus a flat `teacher` series at
    the teacher's test accuracy across the sparsity range."""
    from kdprune.reporting.plots import accuracy_points

    if not rows:
        return []
    runs, summary = _ledger(rows)
    if summary is None:
        return []
    found = accuracy_points(summary, "weight_sparsity").dropna(subset=["x"])
    points = sorted(
        (
            [_cell(p.series), _cell(p.x), _cell(p.mean), _cell(p.low), _cell(p.high), p.n_seeds]
            for p in found.itertuples()
        ),
        key=lambda p: (p[0], p[1]),
    )
    teacher = runs["teacher_test_acc"].dropna()
    if len(teacher) and points:
        accuracy = float(teacher.mean())
        low, high = min(p[1] for p in points), max(p[1] for p in points)
        points += [[TEACHER_SERIES, x, accuracy, None, None, None] for x in (low, high)]
    return points


def verdict_data(rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """The paired verdicts of the report (VERDICT_COLUMNS), `level` the compression level."""
    from kdprune.reporting.configs import group_titles
    from kdprune.reporting.verdicts import verdicts

    if not rows:
        return []
    runs, summary = _ledger(rows)
    if summary is None:
        return []
    table = verdicts(runs, summary)
    table["level"] = table["pairing_key"].map(group_titles(summary))
    return [[_cell(row[k]) for k in VERDICT_COLUMNS] for _, row in table.iterrows()]


def size_data(rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """Test accuracy against file size (SIZE_COLUMNS): each configuration's FP32 point (its ONNX
    file where written, else model.pt) and, when it quantized, its INT8 point; means over seeds."""
    from kdprune.reporting.configs import config_names
    from kdprune.reporting.quantized import int8_points

    if not rows:
        return []
    runs, summary = _ledger(rows)
    if summary is None:
        return []
    names = config_names(summary)
    out = []
    for p in int8_points(runs).itertuples():
        name = names.get(p.config_fingerprint, p.config_fingerprint)
        out.append([name, "FP32", _cell(p.fp32_bytes / 1e3), _cell(p.test_acc)])
        if p.quantize in ("ptq", "qat"):
            kb, acc = p.onnx_file_size_bytes_int8 / 1e3, p.int8_test_acc
            out.append([name, f"INT8 ({p.quantize})", _cell(kb), _cell(acc)])
    return out


def pareto_front(
    rows: Sequence[Mapping[str, Any]], keys: Sequence[str] = ("val_acc", "macs_speedup")
) -> list[Mapping[str, Any]]:
    """The rows no other row beats on every key (all maximised), sorted by the last key."""
    usable = [r for r in rows if all(r.get(k) is not None for k in keys)]

    def dominates(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
        return all(a[k] >= b[k] for k in keys) and any(a[k] > b[k] for k in keys)

    front = [r for r in usable if not any(dominates(o, r) for o in usable)]
    return sorted(front, key=lambda r: r[keys[-1]])


def is_multi_objective(objective: Any) -> bool:
    """Whether the sweep optimised several objectives (`objective: [val_acc, macs_after]`)."""
    if OmegaConf.is_config(objective):
        objective = OmegaConf.to_container(objective)
    return isinstance(objective, list | tuple) and len(objective) > 1


def _start_summary_run(
    rows: Sequence[Mapping[str, Any]],
    sweep_dir: str | Path,
    sweep_name: str | None,
    **init: Any,
) -> Any | None:
    """Start the sweep's summary run (`init` goes to `init_run`), or None when W&B cannot."""
    label = sweep_name or Path(sweep_dir).name
    return init_run(
        dir=sweep_dir,
        **init,
        group=sweep_name,
        job_type="sweep-summary",
        name=f"{label} summary",
        tags=["sweep-summary"],
        config={"sweep_name": sweep_name, "sweep_dir": str(sweep_dir), "runs": len(rows)},
    )


def _curve_charts(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The runs table, the test-accuracy-vs-sparsity line chart and the verdicts table."""
    import wandb

    curve = wandb.Table(columns=list(CURVE_COLUMNS), data=curve_data(rows))
    charts = {
        "runs": wandb.Table(columns=list(TABLE_COLUMNS), data=table_data(rows)),
        "test_acc_vs_sparsity": wandb.plot.line(
            curve,
            x="weight_sparsity",
            y="test_acc",
            stroke="series",
            title="Test accuracy vs weight sparsity (mean over seeds)",
        ),
    }
    verdict_rows = verdict_data(rows)
    if verdict_rows:
        charts["verdicts"] = wandb.Table(columns=list(VERDICT_COLUMNS), data=verdict_rows)
    return charts


def _pareto_charts(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Validation accuracy vs MACs speed-up of the runs that have one, and their Pareto front."""
    import wandb

    points = [r for r in rows if r.get("macs_speedup") is not None]
    if not points:
        return {}
    front = pareto_front(points)
    scatter = wandb.Table(columns=list(TABLE_COLUMNS), data=table_data(points))
    return {
        "val_acc_vs_macs_speedup": wandb.plot.scatter(
            scatter, x="macs_speedup", y="val_acc", title="Validation accuracy vs MACs speed-up"
        ),
        "pareto_front": wandb.Table(columns=list(TABLE_COLUMNS), data=table_data(front)),
    }


def _int8_charts(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """When runs quantized: their FP32-vs-INT8 table and test accuracy vs file size."""
    import wandb

    quantized = [r for r in rows if r.get("int8_test_acc") is not None]
    if not quantized:
        return {}
    data = [[_cell(r.get(key)) for key in INT8_COLUMNS] for r in quantized]
    sizes = wandb.Table(columns=list(SIZE_COLUMNS), data=size_data(rows))
    return {
        "int8_runs": wandb.Table(columns=list(INT8_COLUMNS), data=data),
        "test_acc_vs_size": wandb.plot.scatter(
            sizes, x="file_size_kb", y="test_acc", title="Test accuracy vs file size (FP32, INT8)"
        ),
    }


def _summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The summary run's headline numbers: how many runs, the best validation accuracy, how many
    paired comparisons and how many of them detected a difference."""
    from kdprune.reporting.verdicts import A_BETTER, B_BETTER

    accuracies = [r["val_acc"] for r in rows if r.get("val_acc") is not None]
    said = [row[VERDICT_COLUMNS.index("verdict")] for row in verdict_data(rows)]
    return {
        "runs": len(rows),
        "best_val_acc": max(accuracies) if accuracies else None,
        "comparisons": len(said),
        "differences_detected": sum(v in (A_BETTER, B_BETTER) for v in said),
    }


def log_sweep_summary(
    rows: Sequence[Mapping[str, Any]],
    sweep_dir: str | Path,
    sweep_name: str | None = None,
    multi_objective: bool = False,
    project: str = "kdprune",
    entity: str | None = None,
    mode: str | None = None,
    init_timeout: float = 60.0,
    settings: Mapping[str, Any] | None = None,
) -> Any | None:
    """Log one W&B run (job_type `sweep-summary`) with the sweep's table and charts; return the
    finished run, or None when W&B could not start."""
    run = _start_summary_run(
        rows,
        sweep_dir,
        sweep_name,
        mode=mode,
        init_timeout=init_timeout,
        settings=settings,
        project=project,
        entity=entity,
    )
    if run is None:
        return None
    try:
        charts = _curve_charts(rows) | _int8_charts(rows)
        if multi_objective:
            charts.update(_pareto_charts(rows))
        run.log(charts)
        run.summary.update(_summary(rows))
        describe_run(run)
    finally:
        run.finish()
    return run


class WandbSweepCallback(Callback):
    """Hydra callback (`logger=wandb`): after a multirun, log the sweep's summary run to W&B."""

    def __init__(
        self,
        project: str = "kdprune",
        entity: str | None = None,
        mode: str | None = None,
        init_timeout: float = 60.0,
        settings: Mapping[str, Any] | None = None,
    ):
        self.project = project
        self.entity = entity
        self.mode = mode
        self.init_timeout = init_timeout
        self.settings = dict(settings or {})

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Gather every metrics.json under the sweep folder and log them as one W&B run."""
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = sweep_rows(sweep_dir)
        if not rows:
            log.warning("W&B sweep summary: no metrics.json under %s; nothing logged", sweep_dir)
            return
        log_sweep_summary(
            rows,
            sweep_dir,
            sweep_name=config.get("sweep_name"),
            multi_objective=is_multi_objective(config.get("sweep_metric")),
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            init_timeout=self.init_timeout,
            settings=self.settings,
        )
