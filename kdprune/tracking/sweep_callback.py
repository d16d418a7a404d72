"""After a multirun: one W&B run per sweep holding its table and accuracy-vs-sparsity chart."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from kdprune.results import METRICS_FILE, read_metrics
from kdprune.tracking.wandb_tracker import describe_run, init_run

log = logging.getLogger("kdprune")

TABLE_COLUMNS = (
    "order",
    "kd",
    "method",
    "target_ratio",
    "params_removed_fraction",
    "macs_speedup",
    "val_acc",
    "test_acc",
    "seed",
    "run",
)
CURVE_COLUMNS = ("series", "params_removed_fraction", "test_acc")
TEACHER_SERIES = "teacher"


def _job_order(path: Path) -> tuple[tuple[int, int | str], ...]:
    # job folders are numbered: 2 before 10
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in path.parts)


def sweep_rows(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per finished run under `sweep_dir` (every metrics.json, read by `read_metrics`):
    the table's columns, `run` being the run folder relative to the sweep, plus teacher_test_acc."""
    sweep_dir = Path(sweep_dir)
    rows = []
    for path in sorted(sweep_dir.rglob(METRICS_FILE), key=_job_order):
        try:
            metrics = read_metrics(path)
        except (OSError, json.JSONDecodeError) as err:
            log.warning("sweep summary: skipping %s: %s", path, err)
            continue
        row = {key: metrics.get(key) for key in TABLE_COLUMNS}
        row["run"] = str(path.parent.relative_to(sweep_dir))
        row["teacher_test_acc"] = metrics.get("teacher_test_acc")
        rows.append(row)
    return rows


def table_data(rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """The rows as lists in TABLE_COLUMNS order (a `wandb.Table`'s data)."""
    return [[row.get(key) for key in TABLE_COLUMNS] for row in rows]


def _series_name(row: Mapping[str, Any], vary_kd: bool, vary_method: bool) -> str:
    parts = [str(row["order"])]
    if vary_kd:
        parts.append(f"kd={row['kd']}")
    if vary_method:
        parts.append(str(row["method"]))
    return " ".join(parts)


def curve_data(rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """Test accuracy vs parameter sparsity, one series per order (split by kd and method when the
    sweep varies them), seeds averaged per target ratio, sorted by sparsity; plus a flat `teacher`
    series at the teacher's test accuracy across the sparsity range."""
    keys = ("test_acc", "params_removed_fraction")
    usable = [r for r in rows if all(r.get(k) is not None for k in keys)]
    vary_kd = len({r.get("kd") for r in usable}) > 1
    vary_method = len({r.get("method") for r in usable}) > 1
    groups: dict[tuple[str, Any], list[Mapping[str, Any]]] = defaultdict(list)
    for row in usable:
        groups[(_series_name(row, vary_kd, vary_method), row.get("target_ratio"))].append(row)
    points = []
    for (series, _), members in groups.items():
        sparsity = sum(m["params_removed_fraction"] for m in members) / len(members)
        accuracy = sum(m["test_acc"] for m in members) / len(members)
        points.append([series, sparsity, accuracy])
    points.sort(key=lambda p: (p[0], p[1]))
    teacher = [r["teacher_test_acc"] for r in usable if r.get("teacher_test_acc") is not None]
    if teacher and points:
        accuracy = sum(teacher) / len(teacher)
        low, high = min(p[1] for p in points), max(p[1] for p in points)
        points += [[TEACHER_SERIES, low, accuracy], [TEACHER_SERIES, high, accuracy]]
    return points


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
    """The runs table and the test-accuracy-vs-sparsity line chart."""
    import wandb

    curve = wandb.Table(columns=list(CURVE_COLUMNS), data=curve_data(rows))
    return {
        "runs": wandb.Table(columns=list(TABLE_COLUMNS), data=table_data(rows)),
        "test_acc_vs_sparsity": wandb.plot.line(
            curve,
            x="params_removed_fraction",
            y="test_acc",
            stroke="series",
            title="Test accuracy vs parameter sparsity",
        ),
    }


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


def _summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The summary run's headline numbers: how many runs, the best validation accuracy."""
    accuracies = [r["val_acc"] for r in rows if r.get("val_acc") is not None]
    return {"runs": len(rows), "best_val_acc": max(accuracies) if accuracies else None}


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
        charts = _curve_charts(rows)
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
