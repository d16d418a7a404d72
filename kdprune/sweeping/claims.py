"""Which worker runs which (arm, seed) of a sequential verdict: N workers started with the same
command and `--dir` (on one machine, or several sharing the folder) split the runs through
file locks in the folder, never run one twice, and see the same runs at every look.

- **A run's lock**, `DIR/<arm>/seed_<s>.lock`, is held while a worker runs it: an flock, which
  the kernel drops when every process holding it has exited or died. A worker takes the free
  locks of one arm's open runs without waiting, runs those seeds as one launch, lets them go,
  and goes on to the next arm; then it waits on the lock of every run the look needs, so it
  decides only once each holder has finished (or died).
- **A failed run is marked**: a run its launch left unfinished gets `DIR/<arm>/seed_<s>.failed`
  before its lock is let go, and no worker of the session runs it again. So every worker sees
  the same runs at a look (the decisions are a function of them) and a broken run cannot make
  workers loop. A holder that died leaves no mark: the next worker to take its lock runs it.
- **A session** is a stretch of time in which some worker of the folder is alive: each worker
  holds `DIR/workers.lock` shared while it works. One that finds no other (it gets the lock
  exclusively) starts a new session and clears the marks, so running the command again retries
  the failed runs, as a resume always did.

The locks are flock calls here, not filelock's FileLock (which the teacher cache uses): a run's
lock must pass to the `kdprune -m` child that runs it (a worker killed alone must not free a
run its child still runs), and FileLock keeps its descriptor private, waits by polling, and
has no shared mode (its ReadWriteLock is SQLite, unsafe on a network file system).
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kdprune.errors import KdpruneError, os_error_line
from kdprune.results import METRICS_FILE, STATUS_OK, atomic_write, read_metrics, run_status
from kdprune.sweeping.arms import SEED_FOLDER, Arm, Launcher, run_dir

LOCK, FAILED = ".lock", ".failed"  # beside the run's folder: DIR/<arm>/seed_<s>.lock
SESSION_FILE, REPORT_LOCK = "workers.lock", "report.lock"


def finished(run: Path) -> bool:
    """Whether the run folder holds a finished run (metrics.json with status ok)."""
    try:
        return run_status(read_metrics(run / METRICS_FILE)) == STATUS_OK
    except (OSError, ValueError):
        return False


def failed(run: Path) -> bool:
    """Whether a worker of this session marked the run failed."""
    return run.with_name(run.name + FAILED).exists()


class Flock:
    """An exclusive flock on a file, as a lock object (`acquire`, `release`, `with`). Its
    descriptor is inheritable while held: a child started then holds the lock too."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock, waiting for its holder when blocking; False if not blocking and held."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as err:
            os.close(fd)
            raise KdpruneError(f"cannot lock files there: {os_error_line(err)}") from None
        except BaseException:  # an interrupt while waiting
            os.close(fd)
            raise
        os.set_inheritable(fd, True)
        self.fd = fd
        return True

    def release(self) -> None:
        """Let the lock go (closing this descriptor; a child that inherited it still holds it)."""
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> Flock:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def run_lock(run: Path) -> Flock:
    """The lock a worker holds while it runs this run (its file beside the run folder)."""
    run.parent.mkdir(parents=True, exist_ok=True)
    return Flock(run.with_name(run.name + LOCK))


def report_lock(folder: Path) -> Flock:
    """The lock a worker holds while it writes the report files (one writer at a time)."""
    return Flock(folder / REPORT_LOCK)


@contextmanager
def worker_session(folder: Path) -> Iterator[None]:
    """Hold the folder's session lock shared while the body runs; the first worker of a new
    session (nobody else holds it) clears the failed marks of the last one first."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / SESSION_FILE, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # another worker is alive: join its session, keep its marks
        except OSError as err:
            raise KdpruneError(f"cannot lock files there: {os_error_line(err)}") from None
        else:
            for mark in folder.glob(f"*/{SEED_FOLDER.format(seed='*')}{FAILED}"):
                mark.unlink(missing_ok=True)
        fcntl.flock(fh, fcntl.LOCK_SH)  # waits while a starting worker clears the marks
        yield


@dataclass
class Settled:
    """What one worker did for a look: the runs it launched, the runs that failed (anyone's)."""

    launched: list[tuple[str, int]] = field(default_factory=list)
    failed: list[tuple[str, int]] = field(default_factory=list)


def _open(run: Path) -> bool:
    return not finished(run) and not failed(run)


def _claim(folder: Path, arm: Arm, seeds: Sequence[int]) -> list[tuple[int, Flock]]:
    """The arm's open runs whose lock this worker takes without waiting (and still open once
    taken: another worker may have finished one just before)."""
    claimed = []
    for seed in seeds:
        run = run_dir(folder, arm, seed)
        if not _open(run):
            continue
        lock = run_lock(run)
        if not lock.acquire(blocking=False):
            continue  # another worker runs it
        if _open(run):
            claimed.append((seed, lock))
        else:
            lock.release()
    return claimed


def _run(folder: Path, arm: Arm, claimed: list[tuple[int, Flock]], launch: Launcher) -> list:
    """Launch the claimed seeds, mark the ones left unfinished, let the locks go. A launch
    that raises (an interrupt) marks nothing: its runs are open to the next worker."""
    if not claimed:
        return []
    seeds = [seed for seed, _ in claimed]
    mark = f"no finished run after {socket.gethostname()} pid {os.getpid()} ran it\n".encode()
    try:
        launch(arm, seeds, folder)
        for seed in seeds:
            run = run_dir(folder, arm, seed)
            if not finished(run):
                atomic_write(run.with_name(run.name + FAILED), lambda fh: fh.write(mark))
    finally:
        for _, lock in claimed:
            lock.release()
    return [(arm.name, seed) for seed in seeds]


def settle(folder: Path, wanted: Sequence[tuple[Arm, Sequence[int]]], launch: Launcher) -> Settled:
    """Make every wanted (arm, seed) run finished or marked failed: run the free ones (one
    launch per arm), wait on the lock of the others, and take over a run whose holder died."""
    out = Settled()
    for arm, seeds in wanted:
        out.launched += _run(folder, arm, _claim(folder, arm, seeds), launch)
    for arm, seeds in wanted:
        for seed in seeds:
            run = run_dir(folder, arm, seed)
            if not _open(run):
                continue  # finished or failed: settled for good, whoever still holds its lock
            lock = run_lock(run)
            lock.acquire()  # blocks until its holder finished or died; no other lock is held
            if _open(run):  # its holder died: this worker runs it
                out.launched += _run(folder, arm, [(seed, lock)], launch)
            else:
                lock.release()
    out.failed = [
        (arm.name, seed) for arm, seeds in wanted for seed in seeds
        if failed(run_dir(folder, arm, seed))
    ]  # fmt: skip
    return out
