"""One study's budget shared by many workers: which trials count, which are stale, who may run.

`n_trials` is the study's total of *finished* trials: COMPLETE, PRUNED, or FAIL by their own error.
Two kinds of FAIL do not count, and say so in a user attr:

- `interrupted`: its worker stopped beating (killed, machine lost); failed by whichever worker
  noticed first, and its budget goes back to the study;
- `surplus`: asked by a worker that lost the race for the study's last trial, and given back at
  once, before anything ran;
- `refused`: ran, but its measured latency came from another CPU than the study's
  (`kdprune.sweeping.one_cpu`); its value is not told, and its budget goes back to the study.

A trial *holds* budget while it runs or once it counts. A worker may run the trial it asked for
only if fewer than `n_trials` trials ahead of it (lower numbers: Optuna numbers trials in the
order they were created, under a lock on the study) hold budget; so however many workers ask at
once, exactly `n_trials` finish.
"""

from __future__ import annotations

import logging

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from kdprune.sweeping import internals
from kdprune.sweeping.storage import BeatWatch, HeartbeatJournalStorage

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted"
SURPLUS = "surplus"
REFUSED = "refused"
WORKER = "worker"  # user attr: host:pid of the worker running the trial, set after its first beat
ERROR = "error"  # user attr: why a trial failed by its own error, in one line


def counts(trial: FrozenTrial) -> bool:
    """Whether a finished trial used up budget (complete, pruned, or failed on its own)."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    attrs = trial.user_attrs
    given_back = attrs.get(INTERRUPTED) or attrs.get(SURPLUS) or attrs.get(REFUSED)
    return trial.state == TrialState.FAIL and not given_back


def holds_budget(trial: FrozenTrial) -> bool:
    """Running, or finished and counted."""
    return trial.state == TrialState.RUNNING or counts(trial)


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that used up budget."""
    return [t for t in study.get_trials(deepcopy=False) if counts(t)]


def may_run(study: optuna.Study, trial_number: int, n_trials: int) -> bool:
    """Whether fewer than `n_trials` trials numbered before `trial_number` hold budget."""
    trials = study.get_trials(deepcopy=False)
    return sum(holds_budget(t) for t in trials if t.number < trial_number) < n_trials


def give_back(study: optuna.Study, trial: optuna.Trial) -> None:
    """End a trial that lost the race for the last budget: FAIL, `surplus`, never run."""
    trial.set_user_attr(SURPLUS, True)
    study.tell(trial, state=TrialState.FAIL)
    log.info("trial %d: another worker took the last of the budget; given back", trial.number)


def stale_trial_ids(study: optuna.Study, watch: BeatWatch) -> list[int]:
    """Running trials whose worker stopped beating (empty when heartbeats are off)."""
    storage = internals.study_storage(study)
    if not internals.heartbeat_enabled(storage):
        return []
    stale = set(internals.stale_trial_ids(storage, internals.study_id(study)))
    if not isinstance(storage, HeartbeatJournalStorage):
        # An RDB storage knows only trials that beat once: watch those whose worker died between
        # asking for them and their first beat (no `worker` attr yet).
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        unbeaten = {internals.trial_id(t): None for t in running if WORKER not in t.user_attrs}
        stale |= set(watch.stale(unbeaten))
    return sorted(stale)


def fail_stale_trials(study: optuna.Study, watch: BeatWatch) -> list[int]:
    """Mark stale trials `interrupted` and FAIL; return the numbers this process failed.

    Two workers may notice the same trial: the storage lets one FAIL it, the other gets
    UpdateFinishedTrialError. So does a trial that finished after all.
    """
    storage, failed = internals.study_storage(study), []
    for trial_id in stale_trial_ids(study, watch):
        try:
            storage.set_trial_user_attr(trial_id, INTERRUPTED, True)
            if storage.set_trial_state_values(trial_id, TrialState.FAIL):
                failed.append(storage.get_trial(trial_id).number)
        except UpdateFinishedTrialError:
            continue
    for number in failed:
        log.warning("trial %d: its worker stopped beating; marked failed (interrupted)", number)
    return failed
