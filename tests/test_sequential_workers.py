"""N workers on one sequential verdict (`kdprune verdict --until-decided` started N times with
one --dir): they split the runs, never run one twice, wait for a run held elsewhere, take over
a run whose holder died, leave a failed run out (said in one line, not retried in the session)
and all reach the same decisions and report.

Nothing here races a timer: a worker is held inside a launch until an Event is set by the other
worker, a lock's holder is the test itself or a child process the test kills, and the test
lets a held run go once the worker has asked for its lock (a spy on `claims.run_lock`). The
Event waits give up after HANG_GUARD seconds only so that a deadlock fails instead of hanging.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers.hang_guard import HANG_GUARD
from helpers.sequential_runs import ARMS, StubLauncher, default_plan, write_run

from kdprune.sweeping import claims
from kdprune.sweeping.arms import CHECKED_ENV, run_dir
from kdprune.sweeping.claims import run_lock, worker_session
from kdprune.sweeping.sequential_cli import _finish
from kdprune.sweeping.until_decided import Outcome, until_decided

REPORT_FILES = ("verdicts.csv", "sequential.csv", "PRUNING_REPORT.md", "pruning_comparison.csv")


def _wait(event: threading.Event) -> None:
    assert event.wait(HANG_GUARD), "a worker never got there"  # a deadlock guard only


def _alone(tmp_path: Path) -> tuple[Outcome, StubLauncher]:
    """One worker by itself on a folder of its own: the decisions and runs to expect."""
    launcher = StubLauncher()
    return until_decided(tmp_path / "alone", ARMS, default_plan(), launcher), launcher


class _SeenWaiting:
    """A run's lock that sets `waiting` when a worker asks for it blocking (it waits for its
    holder): the test then knows the worker got there without racing a timer."""

    def __init__(self, lock, waiting: threading.Event) -> None:
        self.lock, self.waiting = lock, waiting

    def acquire(self, blocking: bool = True, **kwargs):
        if blocking:
            self.waiting.set()
        return self.lock.acquire(blocking=blocking, **kwargs)

    def release(self) -> None:
        self.lock.release()


def _seen_waiting(monkeypatch, run: Path) -> threading.Event:
    """An Event set when a worker waits for the lock of `run` (asks for it blocking)."""
    waiting, real = threading.Event(), claims.run_lock

    def run_lock(path: Path):
        return _SeenWaiting(real(path), waiting) if path == run else real(path)

    monkeypatch.setattr(claims, "run_lock", run_lock)
    return waiting


def _worker(folder: Path, launcher: StubLauncher) -> Outcome:
    """What `kdprune verdict --until-decided` does after its checks: the looks, the report."""
    outcome = until_decided(folder, ARMS, default_plan(), launcher)
    _finish(folder, ARMS, default_plan(), outcome)
    return outcome


def test_two_workers_split_the_runs_and_reach_the_same_decisions_and_report(tmp_path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    a_inside, b_launched = threading.Event(), threading.Event()

    def hold_a(launcher: StubLauncher) -> None:  # A waits in its first launch, locks held
        if len(launcher.calls) == 1:
            a_inside.set()
            _wait(b_launched)

    a, b = StubLauncher(after=hold_a), StubLauncher(after=lambda _: b_launched.set())
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(_worker, folder, a)
        _wait(a_inside)
        second = pool.submit(_worker, folder, b)
        out_a, out_b = first.result(), second.result()
    assert a.calls[0][0] != b.calls[0][0]  # B ran another arm while A held the first one's
    launched = a.runs + b.runs
    assert len(launched) == len(set(launched))  # no (arm, seed) run twice
    alone, alone_launcher = _alone(tmp_path)
    assert sorted(launched) == sorted(alone_launcher.runs)  # every run of the design, once
    assert out_a.decisions == out_b.decisions == alone.decisions
    assert sorted(out_a.launched + out_b.launched) == sorted(launched)
    written = {name: (folder / name).read_bytes() for name in REPORT_FILES}
    for outcome in (out_a, out_b):  # each worker's report files are the same bytes
        _finish(folder, ARMS, default_plan(), outcome)
        assert {name: (folder / name).read_bytes() for name in REPORT_FILES} == written


def test_a_worker_waits_for_a_run_locked_elsewhere_and_uses_the_holders_run(
    tmp_path, monkeypatch
) -> None:
    run = run_dir(tmp_path, ARMS[0], 0)
    held = run_lock(run)
    held.acquire()  # the test is another worker, running (arm 0, seed 0)
    waiting = _seen_waiting(monkeypatch, run)
    launcher = StubLauncher()
    with ThreadPoolExecutor(1) as pool:
        worker = pool.submit(until_decided, tmp_path, ARMS, default_plan(), launcher)
        _wait(waiting)  # the worker waits for the held run (having run the free ones) ...
        write_run(ARMS[0], 0, tmp_path)  # ... while the holder finishes it ...
        held.release()  # ... and lets it go
        outcome = worker.result()
    assert launcher.calls[0] == (ARMS[0].name, (1, 2, 3))
    assert (ARMS[0].name, 0) not in launcher.runs
    assert outcome.decisions == _alone(tmp_path)[0].decisions  # seed 0 counted at look 1


HOLDER = """
import fcntl, os, sys

fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()  # holds the lock until killed
"""


@pytest.mark.parametrize("rerun_fails", [False, True], ids=["rerun-ok", "rerun-fails"])
def test_a_run_whose_holder_died_is_run_once_by_the_next_worker(
    tmp_path, capsys, monkeypatch, rerun_fails: bool
) -> None:
    run = run_dir(tmp_path, ARMS[0], 0)
    command = [sys.executable, "-c", HOLDER, str(run_lock(run).path)]
    holder = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        waiting = _seen_waiting(monkeypatch, run)
        launcher = StubLauncher(fail=[(ARMS[0].name, 0)] if rerun_fails else [])
        with ThreadPoolExecutor(1) as pool:
            worker = pool.submit(until_decided, tmp_path, ARMS, default_plan(), launcher)
            _wait(waiting)
            holder.kill()  # dies holding the lock, no run written: the kernel drops the lock
            holder.wait()
            outcome = worker.result()
    finally:
        holder.kill()
        holder.wait()
    assert launcher.calls.count((ARMS[0].name, (0,))) == 1  # taken over alone ...
    assert launcher.runs.count((ARMS[0].name, 0)) == 1  # ... and once, whatever came of it
    if rerun_fails:  # missing, said in one line, and the worker still ended
        assert outcome.failed == [(ARMS[0].name, 0)]
        said = [line for line in capsys.readouterr().err.splitlines() if "failed" in line]
        assert len(said) == 1 and f"{ARMS[0].name} seed 0" in said[0]
    else:
        assert outcome.failed == [] and outcome.decisions == _alone(tmp_path)[0].decisions


def test_a_failed_run_is_left_out_by_the_sessions_workers_and_retried_after(
    tmp_path, capsys
) -> None:
    bad = (ARMS[0].name, 1)
    with worker_session(tmp_path):  # another worker is alive all along: one session
        broken = StubLauncher(fail=[bad])
        first = until_decided(tmp_path, ARMS, default_plan(), broken)
        assert first.failed == [bad] and broken.runs.count(bad) == 1  # not retried at a look
        said = [line for line in capsys.readouterr().err.splitlines() if "failed" in line]
        assert len(said) == 1 and f"{bad[0]} seed 1" in said[0]
        late = StubLauncher()  # a worker started later in the same session
        second = until_decided(tmp_path, ARMS, default_plan(), late)
        assert late.calls == [] and second.failed == [bad]
        assert second.decisions == first.decisions
    again = StubLauncher()  # the command run again, no worker alive: a new session
    third = until_decided(tmp_path, ARMS, default_plan(), again)
    assert bad in again.runs and third.failed == []
    assert third.decisions == _alone(tmp_path)[0].decisions


def test_a_child_started_while_a_run_is_locked_holds_the_lock_until_it_exits(tmp_path) -> None:
    run = tmp_path / "arm" / "seed_0"
    lock, other = run_lock(run), run_lock(run)
    assert lock.acquire(blocking=False)
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE, close_fds=False,
    )  # fmt: skip
    try:
        lock.release()  # the worker lets go (or is killed alone) ...
        assert not other.acquire(blocking=False)  # ... its child still holds the run
    finally:
        child.kill()
        child.wait()
    assert other.acquire(blocking=False)  # both gone: the run is free
    other.release()


def test_the_hydra_launcher_passes_the_run_locks_to_its_child(tmp_path, monkeypatch) -> None:
    from kdprune.sweeping import until_decided

    seen = []

    def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
        seen.append((command, kwargs))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(until_decided.subprocess, "run", run)
    until_decided.hydra_launcher(["dataset=digits"])(ARMS[0], [2, 3], tmp_path)
    ((command, kwargs),) = seen
    assert kwargs.get("close_fds") is False  # inheritable (held) lock descriptors pass
    assert "seed=2,3" in command and f"hydra.sweep.dir={tmp_path / ARMS[0].name}" in command
    assert kwargs["env"][CHECKED_ENV] == "verdict"  # the verdict checked the arm: no re-check


def test_only_a_verdict_launched_multirun_skips_the_command_line_check(monkeypatch) -> None:
    from kdprune.cli import checked_elsewhere

    bad = ["dataset=digits", "prune_method.ratio=1.5"]
    monkeypatch.delenv(CHECKED_ENV, raising=False)
    assert "ratio" in checked_elsewhere(["-m", *bad])
    monkeypatch.setenv(CHECKED_ENV, "verdict")
    assert checked_elsewhere(["-m", *bad]) is None
    assert "ratio" in checked_elsewhere(bad)  # a single run is always checked
