"""Checks of a sweep's `hydra.sweeper` node, run before any work (one line each)."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig

from kdprune.errors import ConfigError, one_line
from kdprune.run_record import VAL_ACC
from kdprune.sweeping.constraints import parse_constraints
from kdprune.sweeping.internals import BASIC_LAUNCHER
from kdprune.sweeping.selectable import check_latency_target, objective_names
from kdprune.sweeping.storage import check_storage
from kdprune.sweeping.sweeper_config import SWEEPER

NO_PRUNER = (None, "optuna.pruners.NopPruner")


def _positive_or_null(value: Any, key: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"hydra.sweeper.{key} must be a whole number >= 1 or null, got {value!r}")


def _check_pruner(pruner: Any) -> None:
    """Build the pruner once: a bad option fails here, not in every trial's job."""
    if pruner is None:
        return
    try:
        instantiate(pruner, _execution_whitelist_=("optuna.pruners.*",))
    except Exception as err:  # Optuna's own checks: TypeError, ValueError
        cause = err.__cause__ or err
        raise ConfigError(f"hydra.sweeper.pruner cannot be built: {one_line(cause)}") from None


def check_sweeper(hydra_cfg: DictConfig) -> None:
    """ConfigError for a kdprune Optuna sweep that cannot run as configured (`hydra_cfg`: the
    composed `hydra` node); other sweepers are left to Hydra."""
    sweeper = hydra_cfg.get("sweeper")
    if sweeper is None or sweeper.get("_target_") != SWEEPER:
        return
    check_storage(sweeper.get("storage"))
    direction = sweeper.get("direction")
    objectives = len(direction) if isinstance(direction, list | ListConfig) else 1
    pruner = (sweeper.get("pruner") or {}).get("_target_")
    if objectives > 1 and pruner not in NO_PRUNER:
        raise ConfigError(
            f"Optuna cannot prune a study with {objectives} objectives, and {pruner} was "
            "chosen: use hydra/sweeper/pruner=none for a multi-objective (Pareto) sweep"
        )
    _check_pruner(sweeper.get("pruner"))
    parse_constraints(sweeper.get("constraints"))
    for key in ("heartbeat_interval", "grace_period"):
        _positive_or_null(sweeper.get(key), key)
    n_jobs = sweeper.get("n_jobs", 1)
    launcher = (hydra_cfg.get("launcher") or {}).get("_target_")
    if isinstance(n_jobs, int) and n_jobs > 1 and launcher == BASIC_LAUNCHER:
        raise ConfigError(
            f"hydra.sweeper.n_jobs={n_jobs} runs trials side by side, which needs a launcher "
            "that runs jobs in other processes (hydra/launcher=joblib or submitit_local / "
            "submitit_slurm); or start more workers (make sweep-worker)"
        )


def check_trial_processes(hydra_cfg: DictConfig, nproc: int) -> None:
    """ConfigError for a kdprune Optuna sweep whose trials run on `nproc` > 1 processes with a
    pruner: such trials report no epochs to the study, so the pruner could never stop one.

    Why refused rather than reported: rank 0 of each trial's job would have to report to the
    study, every rank stop at the same epoch on the pruner's word (one more collective per
    epoch), and the job, ended by TrialPruned in other processes, tell its sweeper "pruned"
    rather than "failed" across the process boundary. Until that is built, a pruner that
    silently never prunes would mislead more than a refusal."""
    sweeper = hydra_cfg.get("sweeper")
    if nproc <= 1 or sweeper is None or sweeper.get("_target_") != SWEEPER:
        return
    pruner = (sweeper.get("pruner") or {}).get("_target_")
    if pruner not in NO_PRUNER:
        raise ConfigError(
            f"distributed.nproc={nproc} makes each trial a job of {nproc} processes, which "
            f"reports no epochs to the study, so {pruner} could never stop a trial: use "
            "hydra/sweeper/pruner=none (or distributed.nproc=1)"
        )


def check_latency_objectives(config: DictConfig) -> None:
    """ConfigError for a kdprune Optuna sweep whose objective (`sweep_metric`) or constraints
    name a latency-target key (`latency_speedup`) while its runs measure no latency target
    (`prune_method.unit` other than latency): refused before the first trial trains."""
    sweeper = config.hydra.get("sweeper")
    if sweeper is None or sweeper.get("_target_") != SWEEPER:
        return
    unit = (config.get("prune_method") or {}).get("unit")
    names = config.get("sweep_metric", VAL_ACC)
    for name in objective_names(names):
        check_latency_target(name, "sweep_metric", unit)
    for bound in parse_constraints(sweeper.get("constraints")):
        check_latency_target(bound.metric, "hydra.sweeper.constraints key", unit)
