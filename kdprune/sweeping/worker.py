"""A worker of a shared study: asks for a trial as soon as it is free, runs it through Hydra's
launcher (job folder = trial number), beats for it while it runs, tells the outcome, and stops when
the study has `n_trials` finished trials — however many other workers share the study.

No batch barrier: a worker never waits for another's trial except at the very end, when the study
still lacks finished trials but every remaining one is running elsewhere; it waits then (polling
every heartbeat interval) because a running trial may yet turn out stale and need running again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from kdprune.errors import MixedCpuError, one_line
from kdprune.results import METRICS_FILE, read_metrics
from kdprune.sweeping import internals
from kdprune.sweeping.budget import (
    ERROR,
    INTERRUPTED,
    REFUSED,
    WORKER,
    counts,
    fail_stale_trials,
    give_back,
    may_run,
)
from kdprune.sweeping.constraints import Bound, attach_constraints
from kdprune.sweeping.one_cpu import OneCpu
from kdprune.sweeping.storage import BeatWatch

log = logging.getLogger(__name__)

RUN_DIR = "run_dir"  # user attr: the trial's run folder (its metrics.json), read by `report`
RANK_CONFIGS = "config_sha256_by_rank"  # user attr of a trial run on several processes

# A trial's overrides, launched as job number `trial.number`: returns its JobReturn.
LaunchOne = Callable[[Sequence[str], int], JobReturn]


@dataclass
class Plan:
    """What every trial of this worker shares."""

    n_trials: int
    n_objectives: int
    configure: Callable[[optuna.Trial], Sequence[str]]  # suggest params: the job's overrides
    launch: LaunchOne
    make_sampler: Callable[[int], optuna.samplers.BaseSampler]  # seeded by trial number
    bounds: list[Bound] = field(default_factory=list)
    one_cpu: OneCpu = field(default_factory=OneCpu)  # measured latencies: from one CPU only
    poll_seconds: float = 1.0
    max_failure_rate: float = 1.0


@contextmanager
def beating(storage: Any, trial_id: int, interval: int | None) -> Iterator[None]:
    """Beat for a trial while the block runs: once at once, then every `interval` seconds."""
    if not internals.heartbeat_enabled(storage):
        yield
        return
    stop = threading.Event()
    storage.record_heartbeat(trial_id)

    def beat() -> None:
        while not stop.wait(interval):
            try:
                storage.record_heartbeat(trial_id)
            except UpdateFinishedTrialError:
                return
            except Exception as err:  # a database hiccup: the next beat may get through
                log.warning("heartbeat of trial id %d failed: %s", trial_id, one_line(err))

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def job_outcome(ret: JobReturn, n_objectives: int) -> tuple[TrialState, list[float] | None, str]:
    """(state, values, error message) of a finished job."""
    if ret.status != JobStatus.COMPLETED:
        error = internals.job_error(ret)
        if isinstance(error, optuna.TrialPruned):
            return TrialState.PRUNED, None, str(error)
        return TrialState.FAIL, None, one_line(error) if isinstance(error, Exception) else ""
    value = ret.return_value
    raw = list(value) if isinstance(value, list | tuple) else [value]
    try:
        values = [float(v) for v in raw]
    except (TypeError, ValueError):
        return TrialState.FAIL, None, f"the job returned {value!r}, not {n_objectives} number(s)"
    if len(values) != n_objectives:
        return TrialState.FAIL, None, f"the job returned {len(values)} values for {n_objectives}"
    return TrialState.COMPLETE, values, ""


def run_dir_of(ret: JobReturn) -> Path | None:
    """The job's run folder, when Hydra got as far as making it."""
    hydra_cfg = getattr(ret, "hydra_cfg", None)
    if hydra_cfg is None:
        return None
    return Path(hydra_cfg.hydra.runtime.output_dir).resolve()


def record_ranks(trial: optuna.Trial, metrics: dict[str, Any]) -> None:
    """A trial whose job ran on several processes carries what each rank ran: the hash of the
    config each composed (`config_sha256_by_rank`, as in its metrics.json)."""
    if int(metrics.get("world_size", 1)) > 1 and RANK_CONFIGS in metrics:
        trial.set_user_attr(RANK_CONFIGS, list(metrics[RANK_CONFIGS]))


class Worker:
    """One loop of asking, running and telling; `n_jobs` of them may share a process."""

    def __init__(self, study: optuna.Study, plan: Plan, grace: float, heartbeat: int | None):
        self.study, self.plan, self.heartbeat = study, plan, heartbeat
        self.watch = BeatWatch(grace)
        self.name = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 10000}"
        self.ran = self.failed = 0
        self.last_failure: JobReturn | None = None

    def run(self) -> None:
        """Run trials until the study has `n_trials` finished ones (or too many of ours fail)."""
        waiting = False
        while True:
            fail_stale_trials(self.study, self.watch)
            trials = self.study.get_trials(deepcopy=False)
            done = sum(counts(t) for t in trials)
            running = [t.number for t in trials if t.state == TrialState.RUNNING]
            if done >= self.plan.n_trials:
                return
            if done + len(running) >= self.plan.n_trials:
                if not internals.heartbeat_enabled(internals.study_storage(self.study)):
                    log.info("trials %s run in other workers; this worker stops", running)
                    return
                if not waiting:
                    log.info("waiting for trials %s of other workers (one may fail)", running)
                waiting = True
                time.sleep(self.plan.poll_seconds)
                continue
            waiting = False
            with warnings.catch_warnings():  # Optuna warns that heartbeats go with optimize()
                warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                trial = self.study.ask()
            if not may_run(self.study, trial.number, self.plan.n_trials):
                give_back(self.study, trial)  # another worker took the last trial first
                continue
            self.run_trial(trial)
            if self.ran and self.failed / self.ran > self.plan.max_failure_rate:
                log.error("%d of %d trials failed (max_failure_rate)", self.failed, self.ran)
                assert self.last_failure is not None
                _ = self.last_failure.return_value  # raises the job's error, with its traceback

    def run_trial(self, trial: optuna.Trial) -> None:
        """Suggest, launch as job `trial.number`, tell; beating all along."""
        storage = internals.study_storage(self.study)
        with beating(storage, internals.trial_id(trial), self.heartbeat):
            trial.set_user_attr(WORKER, self.name)  # after the first beat: it has beaten
            self.study.sampler = self.plan.make_sampler(trial.number)
            try:
                overrides = self.plan.configure(trial)
                ret = self.plan.launch(overrides, trial.number)
            except KeyboardInterrupt:
                trial.set_user_attr(INTERRUPTED, True)
                self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                raise
            self.ran += 1
            self.tell(trial, ret)

    def _tell(self, trial: optuna.Trial, values: list[float] | None, state: TrialState) -> None:
        try:
            self.study.tell(trial, values, state=state, skip_if_finished=True)
        except RuntimeError as err:  # GridSampler calls study.stop() once its grid is done; the
            if "Study.stop" not in str(err):  # trial's state is stored all the same
                raise

    def _record(self, trial: optuna.Trial, run_dir: Path | None) -> str | None:
        """A complete trial's records from its run's metrics: its CPU, then (unless the study
        refuses a value measured on that CPU: the reason is returned) its constraint values."""
        has_metrics = run_dir is not None and (run_dir / METRICS_FILE).exists()
        metrics = read_metrics(run_dir) if run_dir is not None and has_metrics else {}
        cpu = self.plan.one_cpu.record(trial, metrics)
        refusal = self.plan.one_cpu.refusal(self.study, trial.number, cpu)
        if refusal is None and self.plan.bounds:
            attach_constraints(trial, self.plan.bounds, metrics)
        record_ranks(trial, metrics)
        return refusal

    def tell(self, trial: optuna.Trial, ret: JobReturn) -> None:
        """Record the job's outcome on its trial (CPU, constraints and run folder first); a
        trial measured on another CPU than the study's is failed as `refused` and stops this
        worker (MixedCpuError, `one_cpu.py`)."""
        state, values, error = job_outcome(ret, self.plan.n_objectives)
        run_dir = run_dir_of(ret)
        refusal = None
        try:
            if run_dir is not None:
                trial.set_user_attr(RUN_DIR, str(run_dir))
            if state == TrialState.COMPLETE:
                refusal = self._record(trial, run_dir)
            if refusal is not None:
                state, values, error = TrialState.FAIL, None, refusal
                trial.set_user_attr(REFUSED, True)
            if state == TrialState.FAIL:
                trial.set_user_attr(ERROR, error)
            self._tell(trial, values, state)
        except UpdateFinishedTrialError:
            log.warning("trial %d was failed as stale while it ran: result dropped", trial.number)
            return
        if refusal is not None:
            raise MixedCpuError(refusal)
        if state == TrialState.FAIL:
            self.failed += 1
            self.last_failure = ret
            log.warning("trial %d failed: %s", trial.number, error)
        elif state == TrialState.PRUNED:
            log.info("trial %d %s", trial.number, error)
