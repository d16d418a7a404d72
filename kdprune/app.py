"""The Hydra application: compose → `run(cfg)` → the objective value the sweeper asks for."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from kdprune.checks import validate
from kdprune.config import instantiate, trusted
from kdprune.data import Augment, make_loaders
from kdprune.engine import pick_device, process_settings
from kdprune.errors import FaultError, KdpruneError, NonFiniteLossError, os_error_line
from kdprune.metrics import count_macs_params
from kdprune.models import model_name
from kdprune.reporting import comparison_table
from kdprune.results import STATUS_DIVERGED, STATUS_OK, config_fingerprint, write_metrics
from kdprune.schedules.context import RunContext
from kdprune.schedules.orders import order_of
from kdprune.schedules.stages import DENSE_FILE
from kdprune.schedules.start import Start, starting_point
from kdprune.schedules.teacher import Teacher, teacher_model_cfg, train_teacher
from kdprune.sweeping.internals import BASIC_SWEEPER
from kdprune.sweeping.trial_link import EpochHook, epoch_reporter

log = logging.getLogger("kdprune")


def run(cfg: DictConfig, run_dir: str | Path = ".", on_epoch: EpochHook = None) -> dict[str, Any]:
    """Run one experiment as configured and write metrics.json into run_dir; return the metrics.
    `on_epoch` (a sweep's trial reporter) gets each epoch's record after it is logged."""
    with trusted(cfg.get("trusted_targets") or ()):
        return _run(cfg, Path(run_dir), on_epoch)


def _run(cfg: DictConfig, run_dir: Path, on_epoch: EpochHook = None) -> dict[str, Any]:
    start = time.perf_counter()
    validate(cfg)
    t = cfg.trainer
    with process_settings(t.get("threads"), t.get("keep_freed_memory_mb")):
        device = pick_device(cfg.device)
        tracker = instantiate(cfg.logger)(
            cfg=OmegaConf.to_container(cfg, resolve=True), run_dir=str(run_dir)
        )
        failed = True
        try:
            try:
                metrics = _experiment(cfg, device, tracker, run_dir, on_epoch)
            except NonFiniteLossError as err:  # a result of this configuration: record it
                write_metrics(run_dir, diverged_record(cfg, err))
                raise
            metrics["timings"]["total"] = time.perf_counter() - start
            write_metrics(run_dir, metrics)
            tracker.summary({k: v for k, v in metrics.items() if k != "history"})
            failed = False
            return metrics
        finally:
            tracker.finish(failed=failed)


def _experiment(
    cfg: DictConfig, device: torch.device, tracker, run_dir: Path, on_epoch: EpochHook = None
) -> dict[str, Any]:
    """Data, teacher, the student's start, the configured order: the run's metrics."""
    t = cfg.trainer
    data_start = time.perf_counter()
    splits = instantiate(cfg.dataset.splits)
    augment = Augment(**cfg.dataset.augment)
    loaders = make_loaders(
        splits, t.batch_size, t.eval_batch_size, device, augment, data_seed(cfg), t.num_workers
    )
    ctx = RunContext(
        cfg=cfg,
        device=device,
        loaders=loaders,
        tracker=tracker,
        run_dir=run_dir,
        data_identity=splits.identity,
        on_epoch=on_epoch,
    )
    ctx.timings["data"] = time.perf_counter() - data_start
    teacher = train_teacher(ctx)
    start = starting_point(ctx, teacher)
    result = order_of(cfg).run(ctx, teacher, start)
    # Quantization follows the order, reading its model through the model file (none: {}).
    result |= instantiate(cfg.quantize.stage)(
        ctx=ctx, teacher=teacher, model_file=result["model_file"], dense_file=run_dir / DENSE_FILE
    )
    return {
        "status": STATUS_OK,
        "order": cfg.schedule.name,
        "model": model_name(cfg.model),
        "dataset": cfg.dataset.name,
        "seed": int(cfg.seed),
        "data_seed": data_seed(cfg),
        "split_seed": int(cfg.dataset.splits.get("split_seed", cfg.get("split_seed", cfg.seed))),
        "device": str(device),
        **result,
        **_teacher_record(ctx, teacher),
        **_budget_record(cfg, start, ctx.history),
        **_config_record(cfg, splits.identity),
        "timings": dict(ctx.timings),
        "history": ctx.history,
    }


def diverged_record(cfg: DictConfig, err: NonFiniteLossError) -> dict[str, Any]:
    """The metrics.json of a run whose loss became non-finite: where, and its configuration."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    return {
        "status": STATUS_DIVERGED,
        "diverged": {**err.where, "error": str(err)},
        "order": cfg.schedule.name,
        "model": model_name(cfg.model),
        "dataset": cfg.dataset.name,
        "seed": int(cfg.seed),
        "config": config,
        "config_fingerprint": config_fingerprint(config),
    }


def data_seed(cfg: DictConfig) -> int:
    """The seed of the training data's order and augmentation (`data_seed`, else `seed`)."""
    return int(cfg.get("data_seed", cfg.seed))


def _teacher_record(ctx: RunContext, teacher: Teacher) -> dict[str, Any]:
    macs, params = count_macs_params(teacher.module, ctx.example_inputs)
    return {
        "teacher_model": model_name(teacher_model_cfg(ctx.cfg)),
        "teacher_weights": teacher.weights,
        "teacher_sha256": teacher.sha256,
        "teacher_val_acc": teacher.metrics["val_acc"],
        "teacher_test_acc": teacher.metrics["test_acc"],
        "teacher_source": teacher.metrics["source"],
        "teacher_macs": macs,
        "teacher_params": params,
    }


def _budget_record(cfg: DictConfig, start: Start, history: list[dict]) -> dict[str, Any]:
    """Where the student started and every epoch that shaped its final weights."""
    student = sum(1 for h in history if h["stage"] != "teacher")
    inherited = start.inherited_epochs
    return {
        "student_init": start.init,
        "start": start.record(),
        "epochs": {
            "inherited": inherited,
            "student": student,
            "total": None if inherited is None else inherited + student,
        },
        "select_epoch": cfg.trainer.get("select_epoch", "best_val"),
    }


def _config_record(cfg: DictConfig, data_identity: str) -> dict[str, Any]:
    """The resolved config (minus Hydra's node), its fingerprint and the data's identity."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    config["data_identity"] = data_identity
    return {
        "data_identity": data_identity,
        "config": config,
        "config_fingerprint": config_fingerprint(config),
    }


def objective_value(cfg: DictConfig, metrics: dict[str, Any]) -> float | tuple[float, ...]:
    """What a sweeper optimises: `sweep_metric` names a metric or a list of them (never test)."""
    names = cfg.get("sweep_metric", "val_acc")
    if isinstance(names, str):
        return float(metrics[names])
    return tuple(float(metrics[n]) for n in names)


def task(cfg: DictConfig) -> float | tuple[float, ...] | None:
    """Hydra's task function (`kdprune.entry`): a user error ends a single run with one line and
    exit code 2."""
    hc = HydraConfig.get()
    try:
        # In a kdprune Optuna sweep, the trial's reporter: a pruned trial raises TrialPruned,
        # which goes through to the sweeper like any job error and is recorded as PRUNED.
        with epoch_reporter(hc) as on_epoch:
            metrics = run(cfg, hc.runtime.output_dir, on_epoch)
    except NonFiniteLossError as err:
        where = Path(hc.runtime.output_dir) / "metrics.json"
        if hc.mode != RunMode.MULTIRUN:
            print(f"kdprune: error: the run diverged: {err} (recorded in {where})", file=sys.stderr)
            sys.exit(1)
        log.error("%s (recorded in %s)", err, where)
        if hc.sweeper.get("_target_") != BASIC_SWEEPER:
            raise  # a search's sweeper records the trial as failed and goes on
        return None  # the other jobs run; `kdprune.entry.DivergedRuns` sums up at the end
    except KdpruneError as err:
        if hc.mode == RunMode.MULTIRUN:
            log.error("%s", err)
            raise  # the sweeper records the trial as failed and goes on
        print(f"kdprune: error: {err}", file=sys.stderr)
        sys.exit(1 if isinstance(err, FaultError) else 2)
    except OSError as err:  # a full disk, a folder we may not write: a fault, not a bug
        if hc.mode == RunMode.MULTIRUN:
            raise
        print(f"kdprune: error: {os_error_line(err)}", file=sys.stderr)
        sys.exit(1)
    if hc.mode != RunMode.MULTIRUN:
        print(comparison_table(metrics))
        print(f"metrics: {Path(hc.runtime.output_dir) / 'metrics.json'}")
    return objective_value(cfg, metrics)
