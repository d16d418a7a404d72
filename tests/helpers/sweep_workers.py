"""Workers of one shared Optuna study, started as a user would (`kdprune -m +sweep=optuna` with the
storage in $KDPRUNE_STORAGE), and a gate that lets a test hold one of a worker's runs.

Nothing here waits on a timer: a gated worker tells the test where it is by writing a FIFO the
test reads (both block until the other side is there), and waits on a FIFO the test writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from helpers.compose import run_args

REPO = Path(__file__).resolve().parents[2]

# A tracker plug-in (`logger._target_`, module on PYTHONPATH): at the first epoch of this process's
# GATE_HOLD-th run it writes the FIFO `held` and then reads the FIFO `release` (a test that never
# writes it holds the run until it kills the worker). With a FIFO `first` in its folder, it writes
# it when this process's first run starts (the worker has checked the study and asked a trial).
GATE_TRACKER = """
import os
from pathlib import Path


class GateTracker:
    runs = 0

    def __init__(self, cfg, run_dir, **_):
        GateTracker.runs += 1
        self.gate = Path(os.environ["GATE_DIR"])
        self.hold = GateTracker.runs == int(os.environ.get("GATE_HOLD", "0"))
        if GateTracker.runs == 1 and (self.gate / "first").exists():
            (self.gate / "first").write_text("started\\n")

    def log(self, record):
        if self.hold:
            self.hold = False
            (self.gate / "held").write_text("held\\n")
            (self.gate / "release").read_text()

    def summary(self, metrics):
        pass

    def finish(self, failed=False):
        pass
"""

# Tiny trials: digits, 3 student epochs of 2 batches each, no pruner, heartbeats every second.
# A trial is stale after 60 s without a beat (kdprune's default): a live worker whose beats a
# busy machine delays is never taken for a dead one (its trial failed as stale would break every
# count the tests check); a killed worker's trial is failed 60 s or more after the kill, whatever
# the load. A shorter grace would race the load; a longer one only makes the tests slower.
WORKER_ARGS = (
    "+sweep=optuna",
    "teacher.epochs=1",
    "trainer.max_batches=2",
    "measure.repeats=1",
    "hydra/sweeper/pruner=none",
    "hydra.sweeper.heartbeat_interval=1",
    "hydra.sweeper.grace_period=60",
)


class Gate:
    """The FIFOs through which a test holds and releases one worker's run."""

    def __init__(self, root: Path, name: str, hold: int = 0, first: bool = False):
        self.dir = root / f"gate-{name}"
        self.dir.mkdir()
        (self.dir / "gate_tracker.py").write_text(GATE_TRACKER)
        for fifo in ("held", "release", *(["first"] if first else [])):
            os.mkfifo(self.dir / fifo)
        self.hold = hold
        self.log = root / f"{name}.log"  # the worker's output (start_worker writes it)

    def env(self) -> dict[str, str]:
        path = os.pathsep.join([str(self.dir), str(REPO)])  # the plug-in, and this checkout
        return {"GATE_DIR": str(self.dir), "GATE_HOLD": str(self.hold), "PYTHONPATH": path}

    def args(self) -> list[str]:
        return ["logger._target_=gate_tracker.GateTracker", "trusted_targets=[gate_tracker.*]"]

    def wait_held(self, worker: subprocess.Popen) -> None:
        """Return once the worker holds its run; fail if it ended first."""
        said = _read_unless_dead(self.dir / "held", worker)
        assert said == "held\n", self.log.read_text()[-3000:]

    def wait_first_run(self, worker: subprocess.Popen) -> None:
        """Return once the worker started its first run; fail if it ended first."""
        said = _read_unless_dead(self.dir / "first", worker)
        assert said == "started\n", self.log.read_text()[-3000:]

    def release(self) -> None:
        (self.dir / "release").write_text("go\n")


def _read_unless_dead(fifo: Path, worker: subprocess.Popen) -> str:
    """Read a FIFO the worker writes; if the worker ends first, a watcher writes "ended" into it
    (a non-blocking open succeeds only while the test is still waiting for a writer)."""

    def watch() -> None:
        worker.wait()
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # nobody reads any more: the worker had written it
            return
        with os.fdopen(fd, "w") as fh:
            fh.write("ended\n")

    threading.Thread(target=watch, daemon=True).start()
    return fifo.read_text()


def start_worker(
    tmp_path: Path, storage: str, name: str, *extra: str, gate: Gate | None = None
) -> subprocess.Popen:
    """One worker process (its own session, so a test can kill its whole group); output in
    tmp_path/<name>.log."""
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "PYTHONUNBUFFERED": "1",
        "KDPRUNE_STORAGE": storage,
    }
    env.update(gate.env() if gate else {})
    args = run_args(tmp_path, *WORKER_ARGS, f"hydra.sweep.dir={tmp_path}/runs", *extra,
                    *(gate.args() if gate else []))  # fmt: skip
    with open(tmp_path / f"{name}.log", "w") as log:  # the child has its own copy of the file
        return subprocess.Popen(
            [sys.executable, "-m", "kdprune", "-m", *args],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def output(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.log").read_text()
