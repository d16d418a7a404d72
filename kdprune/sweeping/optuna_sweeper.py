"""Hydra's Optuna sweeper, made resumable.

Hydra's `OptunaSweeper` already loads an existing study (`load_if_exists=True`), but run again
it runs `n_trials` *more* trials, leaves trials of a killed run RUNNING forever, and numbers job
folders from 0 again, so they overwrite the first run's. This subclass changes exactly that,
before handing over to the stock sweep loop:

- `n_trials` is the study's total: finished trials (complete, or failed by their own error) count;
- trials left RUNNING by a crash or Ctrl-C are marked FAIL (user attr `interrupted`), not counted;
- job folders continue after the study's last trial number, so nothing is overwritten;
- each trial gets the user attr `run_dir`, its run folder (where `metrics.json` lies), so
  `kdprune report --storage ... --study ...` finds the ledger of every trial.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig
from optuna.trial import TrialState

from kdprune.paths import sqlite_file

log = logging.getLogger(__name__)


def ensure_sqlite_dir(storage: Any) -> None:
    """Create the folder of a relative or absolute `sqlite:///path.db` URL (SQLAlchemy will not)."""
    db = sqlite_file(storage)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that used up budget: complete, or failed on their own (not interrupted)."""
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE
        or (t.state == TrialState.FAIL and not t.user_attrs.get("interrupted"))
    ]


def resume_study(storage: Any, study_name: str | None) -> tuple[int, int]:
    """Mark a study's RUNNING/WAITING trials failed; return (finished trials, all trials)."""
    if storage is None or study_name is None:
        return 0, 0
    ensure_sqlite_dir(storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return 0, 0  # a new study
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        log.warning("trial %d was left running by an earlier run: marked failed", trial.number)
    return len(finished_trials(study)), len(study.trials)


def _sampler(cfg: Any, **overrides: Any) -> Any:
    return instantiate(
        cfg,
        _execution_whitelist_=("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*"),
        **overrides,
    )


class _RecordingLauncher(Launcher):
    """Wraps the configured launcher; after each batch, stores each trial's run folder on it."""

    def __init__(self, inner: Launcher, pending: list):
        self.inner, self.pending = inner, pending

    def setup(self, **kwargs: Any) -> None:
        self.inner.setup(**kwargs)

    def launch(self, job_overrides, initial_job_idx: int):
        returns = self.inner.launch(job_overrides, initial_job_idx)
        for trial, ret in zip(self.pending, returns, strict=False):
            run_dir = getattr(getattr(ret, "hydra_cfg", None), "hydra", None)
            if run_dir is not None:
                trial.set_user_attr("run_dir", str(Path(run_dir.runtime.output_dir).resolve()))
        return returns


class _ResumableImpl(OptunaSweeperImpl):
    sampler_cfg: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.pending: list = []
        self.launcher = _RecordingLauncher(self.launcher, self.pending)

    def _configure_trials(self, trials, *args: Any, **kwargs: Any):
        self.pending[:] = trials
        return super()._configure_trials(trials, *args, **kwargs)

    def sweep(self, arguments: list[str]) -> None:
        done, total = resume_study(self.storage, self.study_name)
        if total:
            self.n_trials = max(self.n_trials - done, 0)
            self.job_idx = total
            # A seeded sampler restarted with its old seed would propose its first trials again.
            if self.sampler_cfg is not None and self.sampler_cfg.get("seed") is not None:
                self.sampler = _sampler(self.sampler_cfg, seed=int(self.sampler_cfg.seed) + total)
            log.info(
                "resuming study %s: %d trials finished, %d to go",
                self.study_name,
                done,
                self.n_trials,
            )
        super().sweep(arguments)


class ResumableOptunaSweeper(OptunaSweeper):
    """`hydra/sweeper=optuna` with `_target_: kdprune.sweeping.ResumableOptunaSweeper`."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: Any | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        custom_search_space: str | None,
        params: DictConfig | None,
    ) -> None:
        self.sweeper = _ResumableImpl(
            _sampler(sampler),
            direction,
            storage,
            study_name,
            n_trials,
            n_jobs,
            max_failure_rate,
            custom_search_space,
            params,
        )
        self.sweeper.sampler_cfg = sampler


def register() -> None:
    """Make the sweeper known to Hydra (plugins are otherwise found only under hydra_plugins)."""
    Plugins.instance().register(ResumableOptunaSweeper)
