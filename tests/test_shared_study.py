"""Many workers, one study: exactly n_trials finish; a killed worker's trial ends FAIL
(`interrupted`) and its budget is run again; no other worker's trial is touched; one job folder per
trial. On a private PostgreSQL server and on Optuna's journal file storage."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from helpers.hang_guard import HANG_GUARD
from helpers.sweep_workers import Gate, output, start_worker
from optuna.trial import TrialState

from kdprune.results import read_metrics
from kdprune.sweeping.budget import INTERRUPTED, SURPLUS, WORKER, counts
from kdprune.sweeping.storage import close_storage, open_storage

N_TRIALS = 12


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen]]:
    """Worker processes a test starts; any still running at the end are killed (with their jobs)."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _trials(storage_url: str) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(storage_url)
    try:
        return optuna.load_study(study_name="kdprune-optuna", storage=storage).get_trials()
    finally:
        close_storage(storage)


def _pid(trial: optuna.trial.FrozenTrial) -> int | None:
    """The pid of the worker that ran the trial (None for a surplus trial, never run)."""
    worker = trial.user_attrs.get(WORKER)
    return int(worker.split(":")[1]) if worker else None


def _kill_one_of_two(tmp_path: Path, storage: str, workers: list) -> tuple[int, int, int]:
    """Workers a and b share the study; both hold their second run; a is killed (SIGKILL, with
    its job) and restarted as a2, which checks the study while b's trial is still running; then
    b goes on. Returns the three workers' pids."""
    gate_a, gate_b = Gate(tmp_path, "a", hold=2), Gate(tmp_path, "b", hold=2)
    a = start_worker(tmp_path, storage, "a", gate=gate_a)
    b = start_worker(tmp_path, storage, "b", gate=gate_b)
    workers += [a, b]
    gate_a.wait_held(a)
    gate_b.wait_held(b)
    os.killpg(a.pid, signal.SIGKILL)
    a.wait()
    gate_a2 = Gate(tmp_path, "a2", first=True)
    a2 = start_worker(tmp_path, storage, "a2", gate=gate_a2)
    workers.append(a2)
    gate_a2.wait_first_run(a2)  # a2 has checked the study and asked for a trial
    gate_b.release()
    assert b.wait(timeout=HANG_GUARD) == 0, output(tmp_path, "b")[-3000:]
    assert a2.wait(timeout=HANG_GUARD) == 0, output(tmp_path, "a2")[-3000:]
    return a.pid, b.pid, a2.pid


def _check_shared_study(tmp_path: Path, storage: str, pids: tuple[int, int, int]) -> None:
    killed, live, restarted = pids
    trials = _trials(storage)
    assert sum(counts(t) for t in trials) == N_TRIALS
    assert all(t.state == TrialState.COMPLETE for t in trials if counts(t))
    interrupted = [t for t in trials if t.user_attrs.get(INTERRUPTED)]
    assert len(interrupted) == 1 and interrupted[0].state == TrialState.FAIL
    assert _pid(interrupted[0]) == killed  # the killed worker's held trial, and only that one
    assert {_pid(t) for t in trials if counts(t)} == {killed, live, restarted}
    assert all(
        _pid(t) is None and t.state == TrialState.FAIL for t in trials if t.user_attrs.get(SURPLUS)
    )
    assert not [t for t in trials if _pid(t) == live and not counts(t)]  # b's trials untouched
    assert [_pid(t) for t in trials].count(killed) == 2  # its first trial and the held one
    # One job folder per trial (named by its number), holding that trial's run.
    runs = tmp_path / "runs"
    folders = sorted(int(p.name) for p in runs.iterdir() if p.is_dir())
    assert folders == sorted(t.number for t in trials if not t.user_attrs.get(SURPLUS))
    for t in (t for t in trials if counts(t)):
        assert Path(t.user_attrs["run_dir"]) == runs / str(t.number)
        assert read_metrics(runs / str(t.number))["target_ratio"] == t.params["prune_method.ratio"]
    assert "nothing to do" not in output(tmp_path, "a2")


def test_two_workers_on_postgres_finish_exactly_n_trials_after_a_kill(
    tmp_path: Path, postgres, workers
) -> None:
    storage = postgres.database("killed_worker")
    pids = _kill_one_of_two(tmp_path, storage, workers)
    _check_shared_study(tmp_path, storage, pids)


@pytest.mark.slow  # the PostgreSQL twin above runs the same scenario in `make test`
def test_two_workers_on_a_journal_file_finish_exactly_n_trials_after_a_kill(
    tmp_path: Path, workers
) -> None:
    storage = f"journal:///{tmp_path}/study.log"
    pids = _kill_one_of_two(tmp_path, storage, workers)
    _check_shared_study(tmp_path, storage, pids)
