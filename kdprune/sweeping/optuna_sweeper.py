"""Hydra's Optuna sweeper, made a worker of a study that any number of processes share.

Hydra's `OptunaSweeper` runs `n_trials` more trials per call in batches of `n_jobs` that wait for
the slowest, numbers job folders per process, and cannot prune. This sweeper keeps its search-space
parsing and replaces its loop with `Worker`s (`worker.py`):

- `n_trials` is the study's total of finished trials, shared by every worker on the same storage
  (`budget.py`); a study that already has them says "nothing to do";
- each worker asks for a new trial as soon as it is free (`n_jobs` loops per process, for launchers
  that run jobs in other processes); job folders are named by trial number;
- a running trial is failed as `interrupted` only when its worker stopped beating
  (`heartbeat_interval`, `grace_period`; `storage.py`), and its budget is given back;
- jobs report student epochs after the cut to their trial and stop when the pruner says so
  (`trial_link.py`);
- `constraints` are attached to each trial before `tell`; the best trial is the best feasible one
  (`constraints.py`, `summary.py`);
- each trial records the CPU its run measured on, and a study whose objective or constraints are
  measured latencies takes them from one CPU only (`one_cpu.py`).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig

from kdprune.cpu_features import cpu_info
from kdprune.distributed import processes
from kdprune.run_record import VAL_ACC
from kdprune.sweeping import internals
from kdprune.sweeping.budget import finished_trials
from kdprune.sweeping.constraints import parse_constraints
from kdprune.sweeping.one_cpu import OneCpu
from kdprune.sweeping.storage import grace_seconds, open_storage, redacted
from kdprune.sweeping.summary import log_results, study_results, write_results
from kdprune.sweeping.sweeper_checks import (
    check_latency_objectives,
    check_sweeper,
    check_trial_processes,
)
from kdprune.sweeping.worker import Plan, Worker

log = logging.getLogger(__name__)
SAMPLER_TARGETS = ("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*")
POLL_SECONDS = 2.0  # a worker waiting for the study's last trials looks again this often
GRID_SAMPLER = "optuna.samplers.GridSampler"
# The options Hydra's own Optuna sweeper takes (besides the sampler).
HYDRA_OPTIONS = (
    "direction",
    "storage",
    "study_name",
    "n_trials",
    "n_jobs",
    "max_failure_rate",
    "custom_search_space",
    "params",
)


class SharedStudySweeper(internals.OptunaSweeperImpl):
    """The sweep loop: open the shared study, run `n_jobs` workers, report the best trial."""

    def __init__(self, sampler: DictConfig, pruner: DictConfig | None, options: dict[str, Any]):
        hydra_options: dict[str, Any] = {key: options.get(key) for key in HYDRA_OPTIONS}
        super().__init__(None, **hydra_options)
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        self.heartbeat_interval = options.get("heartbeat_interval")
        self.grace_period = options.get("grace_period")
        self.bounds = parse_constraints(options.get("constraints"))
        self.one_cpu = OneCpu()  # the sweep's own, from its objective and bounds (setup)
        self.grid: dict[str, list] | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        check_sweeper(config.hydra)
        check_latency_objectives(config)
        check_trial_processes(config.hydra, processes(config.get("distributed") or {}))
        self.one_cpu = OneCpu.of(config.get("sweep_metric", VAL_ACC), self.bounds)
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def make_sampler(self, trial_number: int) -> optuna.samplers.BaseSampler:
        """The sampler, seeded by `seed + trial_number`: workers that start together with the
        same seed still propose different trials, and a resumed study does not repeat itself."""
        seed = self.sampler_cfg.get("seed")
        kwargs: dict[str, Any] = {}
        if seed is not None and not self.grid:
            kwargs["seed"] = int(seed) + trial_number
        sampler = instantiate(self.sampler_cfg, _execution_whitelist_=SAMPLER_TARGETS, **kwargs)
        if isinstance(sampler, functools.partial):  # GridSampler: needs the search space
            sampler = sampler(self.grid)  # its seed orders the grid: the same in every worker,
            sampler.reseed_rng()  # but which unvisited point a worker takes is its own draw
        return sampler

    def _search_space(self, arguments: list[str]) -> tuple[dict, dict, list]:
        space, fixed_params, fixed_overrides = internals.search_space(self, arguments)
        for name in fixed_params:
            space.pop(name, None)
        if self.sampler_cfg.get("_target_") == GRID_SAMPLER:
            self.grid = {k: internals.grid_choices(d) for k, d in space.items()}
            # GridSampler's grid is every combination of the choices (it drops no duplicates)
            self.n_trials = min(self.n_trials, math.prod(len(c) for c in self.grid.values()))
        return space, fixed_params, fixed_overrides

    def _open_study(self) -> optuna.Study:
        storage = None
        if self.storage is not None:
            storage = open_storage(self.storage, self.heartbeat_interval, self.grace_period)
        return optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=self.make_sampler(0),
            directions=internals.directions(self),
            load_if_exists=True,
        )

    def sweep(self, arguments: list[str]) -> None:
        space, fixed_params, fixed_overrides = self._search_space(arguments)
        study = self._open_study()
        done = len(finished_trials(study))
        where = f"study {study.study_name} in {redacted(str(self.storage))}"
        verdict = "nothing to do" if done >= self.n_trials else "this worker joins"
        log.info("%s: %d of n_trials=%d finished, %s", where, done, self.n_trials, verdict)
        if done < self.n_trials:
            if self._runs_here():
                self.one_cpu.check_machine(study, cpu_info())

            def configure(trial: optuna.Trial) -> list[str]:
                return internals.trial_overrides(self, trial, space, fixed_params, fixed_overrides)

            self._run_workers(study, self._plan(study, configure))
        results = study_results(study, self.bounds)
        log_results(results)
        assert self.config is not None  # set by setup(), which Hydra calls before sweep()
        write_results(results, self.config.hydra.sweep.dir)

    def _runs_here(self) -> bool:
        """Whether this worker's launcher runs its trials on this machine (not SLURM's nodes)."""
        assert self.config is not None  # set by setup(), which Hydra calls before sweep()
        launcher = (self.config.hydra.get("launcher") or {}).get("_target_")
        return launcher in internals.LOCAL_LAUNCHERS

    def _plan(self, study: optuna.Study, configure: Any) -> Plan:
        launcher = self.launcher
        assert launcher is not None  # set by setup(), which Hydra calls before sweep()
        return Plan(
            n_trials=self.n_trials,
            n_objectives=len(study.directions),
            configure=configure,
            launch=lambda overrides, number: launcher.launch([overrides], number)[0],
            make_sampler=self.make_sampler,
            bounds=self.bounds,
            one_cpu=self.one_cpu,
            poll_seconds=min(float(self.heartbeat_interval or 1), POLL_SECONDS),
            max_failure_rate=self.max_failure_rate,
        )

    def _run_workers(self, study: optuna.Study, plan: Plan) -> None:
        grace = grace_seconds(self.heartbeat_interval, self.grace_period)
        if self.n_jobs <= 1:
            Worker(study, plan, grace, self.heartbeat_interval).run()
            return
        errors: list[BaseException] = []

        def work() -> None:
            mine = optuna.load_study(
                study_name=study.study_name,
                storage=internals.study_storage(study),
                sampler=self.make_sampler(0),
            )
            try:
                Worker(mine, plan, grace, self.heartbeat_interval).run()
            except BaseException as err:  # handed to the main thread, which raises it
                errors.append(err)

        threads = [threading.Thread(target=work, name=f"worker-{i}") for i in range(self.n_jobs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]


class ResumableOptunaSweeper(OptunaSweeper):
    """`hydra/sweeper=kdprune_optuna` (sweeper_config.py): Hydra's Optuna sweeper as a worker."""

    def __init__(
        self,
        sampler: DictConfig,
        pruner: DictConfig | None = None,
        **options: Any,  # direction, storage, study_name, n_trials, n_jobs, heartbeat_interval ...
    ) -> None:
        self.sweeper = SharedStudySweeper(sampler, pruner, options)


def register() -> None:
    """Make the sweeper known to Hydra (plugins are otherwise found only under hydra_plugins)."""
    Plugins.instance().register(ResumableOptunaSweeper)
