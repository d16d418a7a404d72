"""The Hydra application: compose → `run(cfg)` → the objective value the sweeper asks for."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from kdprune import distributed, ranks_job
from kdprune.config_checks import validate
from kdprune.data import Augment, make_loaders
from kdprune.distributed import Ranks
from kdprune.engine import pick_device, process_settings
from kdprune.engine.checkpoints import RunState, missing_folders
from kdprune.errors import (
    COLLECTIVE_FAILED,
    FaultError,
    KdpruneError,
    NonFiniteLossError,
    os_error_line,
)
from kdprune.instantiation import config_dict, instantiate, trusted
from kdprune.metrics import count_macs_params
from kdprune.models import model_name
from kdprune.reporting import comparison_table
from kdprune.results import config_fingerprint, config_sha256, write_metrics
from kdprune.run_record import (
    CONFIG_FINGERPRINT,
    HISTORY,
    STATUS,
    STATUS_DIVERGED,
    STATUS_OK,
    TEACHER_TEST_ACC,
    TEACHER_VAL_ACC,
    TEST_ACC,
    TIMINGS,
    VAL_ACC,
    build_record,
)
from kdprune.schedules.context import RunContext
from kdprune.schedules.orders import order_of
from kdprune.schedules.stages import DENSE_FILE
from kdprune.schedules.start import Start, starting_point
from kdprune.schedules.teacher_stage import Teacher, teacher_model_cfg, train_teacher
from kdprune.sweeping.internals import BASIC_SWEEPER
from kdprune.sweeping.trial_link import EpochHook, epoch_reporter
from kdprune.tracking import NullTracker

log = logging.getLogger("kdprune")


def run(cfg: DictConfig, run_dir: str | Path = ".", on_epoch: EpochHook = None) -> dict[str, Any]:
    """Run one experiment as configured and write metrics.json into run_dir; return the metrics.
    `on_epoch` (a sweep's trial reporter) gets each epoch's record after it is logged."""
    with trusted(cfg.get("trusted_targets") or ()):
        return _run(cfg, Path(run_dir), on_epoch)


def _run(cfg: DictConfig, run_dir: Path, on_epoch: EpochHook = None) -> dict[str, Any]:
    start = time.perf_counter()
    validate(cfg)
    ranks = distributed.current()
    distributed.check_run(cfg, ranks)
    configs = ranks.agree_on_config(run_config(cfg))  # before any work: one config everywhere
    t = cfg.trainer
    with process_settings(t.get("threads"), t.get("keep_freed_memory_mb")):
        device = ranks.device(pick_device(cfg.device))
        config = config_dict(cfg)
        # Rank 0 alone writes: metrics.json, the model files, the tracker's run.
        tracker = instantiate(cfg.logger) if ranks.is_main else NullTracker
        tracker = tracker(cfg=config, run_dir=str(run_dir))
        failed = True
        try:
            with run_state(cfg, ranks, device) as state:
                try:
                    metrics = _experiment(cfg, device, tracker, run_dir, on_epoch, ranks, state)
                except Exception as err:
                    if isinstance(err, NonFiniteLossError) and ranks.is_main:  # a result: record it
                        write_metrics(run_dir, diverged_record(cfg, err))
                    if ends_the_run(err):
                        _discard(state)
                    raise
                metrics[TIMINGS]["total"] = time.perf_counter() - start
                metrics["config_sha256_by_rank"] = configs
                if ranks.is_main:
                    write_metrics(run_dir, metrics)
                _discard(state)  # the run has its result: nothing left to resume
            tracker.summary({k: v for k, v in metrics.items() if k != HISTORY})
            failed = False
            return metrics
        finally:
            tracker.finish(failed=failed)


def _discard(state: RunState | None) -> None:
    if state is not None:
        state.discard()


def ends_the_run(err: Exception) -> bool:
    """Whether an error is the run's outcome, which a rerun meets again (a divergence, a bad
    setting, a trial the sweep pruned): its saved state is of no use. A fault (a failed
    collective, a full disk) keeps the state for the rerun, as a stop (SIGTERM) does."""
    optuna = sys.modules.get("optuna")  # loaded by a sweep, never for a plain run
    if optuna is not None and isinstance(err, optuna.TrialPruned):
        return True
    return isinstance(err, KdpruneError) and not isinstance(err, FaultError)


@contextmanager
def run_state(cfg: DictConfig, ranks: Ranks, device: torch.device) -> Iterator[RunState | None]:
    """The training state this run saves after every epoch and resumes from (`resume`): a
    folder keyed by the resolved config and the world size, locked while the run lasts. None
    when `resume` is off, or while another run of the same configuration holds it."""
    if not cfg.get("resume", True):
        yield None
        return
    folder = state_folder(cfg, ranks)
    # The lock lives in the folder, so the folder's removal (the run has its result) takes it.
    lock, held, created = FileLock(str(folder / "lock")), False, []
    if ranks.is_main:
        created = missing_folders(folder)[1:]  # removed, if empty, with the folder
        folder.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
            held = True
        except Timeout:
            log.warning("%s is in use by another run of this configuration: no state kept", folder)
    try:
        keep = ranks.broadcast_object(held if ranks.is_main else None)
        yield RunState(folder, ranks.is_main, device, created) if keep else None
    finally:
        if held:
            lock.release()


def state_folder(cfg: DictConfig, ranks: Ranks) -> Path:
    """Where a run's training state lives: `paths.state_dir/<config hash>-w<world size>`."""
    return Path(cfg.paths.state_dir) / f"{config_sha256(run_config(cfg))}-w{ranks.world_size}"


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's resolved config without Hydra's node."""
    config = config_dict(cfg)
    config.pop("hydra", None)
    return config


def _experiment(
    cfg: DictConfig,
    device: torch.device,
    tracker,
    run_dir: Path,
    on_epoch: EpochHook = None,
    ranks: Ranks | None = None,
    state: RunState | None = None,
) -> dict[str, Any]:
    """Data, teacher, the student's start, the configured order: the run's metrics."""
    t, ranks = cfg.trainer, ranks or Ranks()
    data_start = time.perf_counter()
    splits = instantiate(cfg.dataset.splits)
    augment = Augment(**cfg.dataset.augment)
    loaders = make_loaders(
        splits, t.batch_size, t.eval_batch_size, device, augment, data_seed(cfg), t.num_workers,
        ranks,
    )  # fmt: skip
    ctx = RunContext(
        cfg=cfg,
        device=device,
        loaders=loaders,
        tracker=tracker,
        run_dir=run_dir,
        data_identity=splits.identity,
        on_epoch=on_epoch,
        ranks=ranks,
        state=state,
    )
    ctx.timings["data"] = time.perf_counter() - data_start
    teacher = train_teacher(ctx)
    start = starting_point(ctx, teacher)
    result = order_of(cfg).run(ctx, teacher, start)
    # Quantization follows the order, reading its model through the model file (none: {}).
    result |= instantiate(cfg.quantize.stage)(
        ctx=ctx, teacher=teacher, model_file=result["model_file"], dense_file=run_dir / DENSE_FILE
    )
    return build_record(
        {
            STATUS: STATUS_OK,
            "order": cfg.schedule.name,
            "model": model_name(cfg.model),
            "dataset": cfg.dataset.name,
            "seed": int(cfg.seed),
            "data_seed": data_seed(cfg),
            "split_seed": _split_seed(cfg),
            "device": str(device),
        },
        ranks.record(),
        {"resumed": state is not None and bool(state.saved)},
        result,
        _teacher_record(ctx, teacher),
        _budget_record(cfg, start, ctx.history),
        _config_record(cfg, splits.identity),
        {TIMINGS: dict(ctx.timings), HISTORY: ctx.history},
    )


def diverged_record(cfg: DictConfig, err: NonFiniteLossError) -> dict[str, Any]:
    """The metrics.json of a run whose loss became non-finite: where, and its configuration."""
    config = config_dict(cfg)
    config.pop("hydra", None)
    return build_record(
        {
            STATUS: STATUS_DIVERGED,
            "diverged": {**err.where, "error": str(err)},
            "order": cfg.schedule.name,
            "model": model_name(cfg.model),
            "dataset": cfg.dataset.name,
            "seed": int(cfg.seed),
            "config": config,
            CONFIG_FINGERPRINT: config_fingerprint(config),
        }
    )


def _split_seed(cfg: DictConfig) -> int:
    """The seed of the train / val split (`dataset.splits.split_seed`, else `split_seed`, else
    `seed`)."""
    return int(cfg.dataset.splits.get("split_seed", cfg.get("split_seed", cfg.seed)))


def data_seed(cfg: DictConfig) -> int:
    """The seed of the training data's order and augmentation (`data_seed`, else `seed`)."""
    return int(cfg.get("data_seed", cfg.seed))


def _teacher_record(ctx: RunContext, teacher: Teacher) -> dict[str, Any]:
    macs, params = count_macs_params(teacher.module, ctx.example_inputs)
    return {
        "teacher_model": model_name(teacher_model_cfg(ctx.cfg)),
        "teacher_weights": teacher.weights,
        "teacher_sha256": teacher.sha256,
        TEACHER_VAL_ACC: teacher.metrics[VAL_ACC],
        TEACHER_TEST_ACC: teacher.metrics[TEST_ACC],
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
    config = config_dict(cfg)
    config.pop("hydra", None)
    config["data_identity"] = data_identity
    return {
        "data_identity": data_identity,
        "config": config,
        CONFIG_FINGERPRINT: config_fingerprint(config),
    }


def objective_value(cfg: DictConfig, metrics: dict[str, Any]) -> float | tuple[float, ...]:
    """What a sweeper optimises: `sweep_metric` names a metric or a list of them (never test)."""
    names = cfg.get("sweep_metric", VAL_ACC)
    if isinstance(names, str):
        return float(metrics[names])
    return tuple(float(metrics[n]) for n in names)


def task(cfg: DictConfig) -> float | tuple[float, ...] | None:
    """Hydra's task function (`kdprune.entry`): a user error ends a single run with one line and
    exit code 2."""
    hc = HydraConfig.get()
    launched = False
    try:
        if ranks_job.wanted(cfg):  # distributed.nproc > 1: this job starts its ranks
            launched = True
            metrics = ranks_job.run_job(cfg, hc)
        else:
            # In a kdprune Optuna sweep, the trial's reporter: a pruned trial raises TrialPruned,
            # which goes through to the sweeper like any job error and is recorded as PRUNED.
            with epoch_reporter(hc) as on_epoch:
                metrics = run(cfg, hc.runtime.output_dir, on_epoch)
    except (KdpruneError, OSError, RuntimeError) as err:
        _failed(err, hc)
        return None
    if hc.mode != RunMode.MULTIRUN and distributed.current().is_main and not launched:
        print(comparison_table(metrics))
        print(f"metrics: {Path(hc.runtime.output_dir) / 'metrics.json'}")
    return objective_value(cfg, metrics)


def _failed(err: Exception, hc) -> None:
    """End a failed run: one line and an exit code for a single run; in a multirun, a log line
    and the error for the sweeper (a diverged grid job returns None and the others go on)."""
    multirun = hc.mode == RunMode.MULTIRUN
    if isinstance(err, NonFiniteLossError):
        where = Path(hc.runtime.output_dir) / "metrics.json"
        if not multirun:
            _exit_with(f"the run diverged: {err} (recorded in {where})", 1, everywhere=True)
        log.error("%s (recorded in %s)", err, where)
        if hc.sweeper.get("_target_") != BASIC_SWEEPER:
            raise err  # a search's sweeper records the trial as failed and goes on
        return None  # the other jobs run; `kdprune.entry.DivergedRuns` sums up at the end
    if isinstance(err, RuntimeError):  # a failed collective, or a bug (raised as it is)
        reason = distributed.collective_failure(err) if distributed.current().active else None
        if reason is None:
            raise err
        _exit_with(
            f"{COLLECTIVE_FAILED} ({reason}): another rank died or stopped answering; no "
            "metrics.json was written; the same command reruns it from the last saved epoch",
            1,
            everywhere=False,
        )
    if isinstance(err, ranks_job.RanksFailed) and not multirun:  # its ranks' line and code
        _exit_with(str(err), err.exit_code, everywhere=True)
    if multirun:
        if isinstance(err, KdpruneError):
            log.error("%s", err)
        raise err  # the sweeper records the trial as failed and goes on
    if isinstance(err, OSError):  # a full disk, a folder we may not write: a fault, not a bug
        _exit_with(os_error_line(err), 1, everywhere=False)
    fault = isinstance(err, FaultError)
    alike = not fault or isinstance(err, distributed.RanksDisagree)
    _exit_with(str(err), 1 if fault else 2, everywhere=alike)


def _exit_with(line: str, code: int, everywhere: bool) -> None:
    """Print `kdprune: error: <line>` and exit. Over several ranks, an error every rank meets
    alike (a bad config, a divergence) is printed by rank 0 alone; one a rank met by itself is
    printed by that rank, which it names."""
    ranks = distributed.current()
    if not ranks.active:
        print(f"kdprune: error: {line}", file=sys.stderr)
    elif not everywhere:
        print(f"kdprune: error: rank {ranks.rank} of {ranks.world_size}: {line}", file=sys.stderr)
    elif ranks.is_main:
        print(f"kdprune: error: {line}", file=sys.stderr)
    sys.exit(code)
