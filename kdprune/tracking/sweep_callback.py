"""After a multirun: one W&B run per sweep holding its summary's tables as W&B objects: the runs
table, the accuracy-vs-sparsity chart (a point per configuration, its 95% interval over seeds)
and the paired verdicts table; for quantized runs, their FP32-vs-INT8 table and an
accuracy-vs-file-size chart; for a multi-objective sweep, validation accuracy vs MACs speed-up
and the Pareto front.

Every table, front and verdict is built by `kdprune.reporting.sweep_summary`, from the report's
ledger rows, so the summary groups, pairs and judges runs exactly as `kdprune report` does; this
module only turns them into W&B objects."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from kdprune.run_record import MACS_SPEEDUP, TEST_ACC, VAL_ACC, WEIGHT_SPARSITY
from kdprune.tracking.wandb_tracker import describe_run, init_run

if TYPE_CHECKING:  # reporting imports pandas and matplotlib: only a summary needs them
    from kdprune.reporting.sweep_summary import SweepTables, Table

log = logging.getLogger("kdprune")


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


def _table(table: Table) -> Any:
    """A `wandb.Table` of the same columns and rows."""
    import wandb

    return wandb.Table(columns=list(table.columns), data=table.data)


def _curve_charts(tables: SweepTables) -> dict[str, Any]:
    """The runs table, the test-accuracy-vs-sparsity line chart and the verdicts table."""
    import wandb

    charts = {
        "runs": _table(tables.runs),
        "test_acc_vs_sparsity": wandb.plot.line(
            _table(tables.curve),
            x=WEIGHT_SPARSITY,
            y=TEST_ACC,
            stroke="series",
            title="Test accuracy vs weight sparsity (mean over seeds)",
        ),
    }
    if tables.verdicts.data:
        charts["verdicts"] = _table(tables.verdicts)
    return charts


def _pareto_charts(tables: SweepTables) -> dict[str, Any]:
    """Validation accuracy vs MACs speed-up of the runs that have one, and their Pareto front."""
    import wandb

    if not tables.speedup_runs.data:
        return {}
    return {
        "val_acc_vs_macs_speedup": wandb.plot.scatter(
            _table(tables.speedup_runs),
            x=MACS_SPEEDUP,
            y=VAL_ACC,
            title="Validation accuracy vs MACs speed-up",
        ),
        "pareto_front": _table(tables.pareto_front),
    }


def _int8_charts(tables: SweepTables) -> dict[str, Any]:
    """When runs quantized: their FP32-vs-INT8 table and test accuracy vs file size."""
    import wandb

    if not tables.int8_runs.data:
        return {}
    return {
        "int8_runs": _table(tables.int8_runs),
        "test_acc_vs_size": wandb.plot.scatter(
            _table(tables.sizes),
            x="file_size_kb",
            y=TEST_ACC,
            title="Test accuracy vs file size (FP32, INT8)",
        ),
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
        from kdprune.reporting.sweep_summary import sweep_tables

        tables = sweep_tables(rows)
        charts = _curve_charts(tables) | _int8_charts(tables)
        if multi_objective:
            charts.update(_pareto_charts(tables))
        run.log(charts)
        run.summary.update(tables.headline)
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
        from kdprune.reporting.sweep_summary import sweep_rows

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
