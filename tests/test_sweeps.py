"""Sweeps end to end on digits: an orders grid, an Optuna study that fails, resumes, counts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from helpers.compose import run_args
from helpers.hang_guard import HANG_GUARD
from optuna.trial import TrialState

from kdprune.results import read_metrics

# A tracker plug-in (`logger._target_`) that holds the second trial of a sweep after its first
# epoch: it says so on stdout and then blocks on a FIFO nobody writes to, until the test kills it.
GATE_TRACKER = """
import os
from pathlib import Path


class GateTracker:
    def __init__(self, cfg, run_dir, **_):
        started = Path(os.environ["GATE_DIR"]) / "started"
        started.mkdir(exist_ok=True)
        (started / str(len(list(started.iterdir())))).touch()
        self.hold = len(list(started.iterdir())) == 2

    def log(self, record):
        if self.hold:
            print("GATE: holding trial", flush=True)
            open(Path(os.environ["GATE_DIR"]) / "never", "rb").read()

    def summary(self, metrics):
        pass

    def finish(self, failed=False):
        pass
"""


def _kdprune(tmp_path: Path, *args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "kdprune", "-m", *run_args(tmp_path, *args)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kwargs)  # fmt: skip


def _optuna_args(tmp_path: Path, n_trials: int, *extra: str) -> list[str]:
    # Heartbeats every second, stale after 3 s without one: the resumed sweep reclaims quickly.
    return ["+sweep=optuna", f"hydra.sweeper.n_trials={n_trials}", "teacher.epochs=1",
            "trainer.max_batches=2", "measure.repeats=1",
            f"hydra.sweeper.storage=sqlite:///{tmp_path}/study.db",
            "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3",
            "hydra/sweeper/pruner=none",  # every trial runs to its end (pruning: test_sweep_*)
            f"hydra.sweep.dir={tmp_path}/runs", *extra]  # fmt: skip


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="kdprune-optuna", storage=f"sqlite:///{tmp_path}/study.db")


def _gated_sweep(tmp_path: Path, n_trials: int) -> subprocess.Popen:
    """An Optuna sweep whose second trial stops after its first epoch until it is killed."""
    gate = tmp_path / "gate"
    gate.mkdir()
    os.mkfifo(gate / "never")
    (gate / "gate_tracker.py").write_text(GATE_TRACKER)
    args = _optuna_args(tmp_path, n_trials, "logger._target_=gate_tracker.GateTracker",
                        "trusted_targets=[gate_tracker.*]")  # fmt: skip
    repo = Path(__file__).resolve().parents[1]  # the plug-in, and this checkout's kdprune
    env = {"GATE_DIR": str(gate), "PYTHONPATH": os.pathsep.join([str(gate), str(repo)])}
    return _kdprune(tmp_path, *args, env=env, start_new_session=True)


def test_tiny_orders_grid_runs_every_combination(tmp_path: Path) -> None:
    proc = _kdprune(tmp_path, "+sweep=orders", "prune_method.ratio=0.3,0.6", "kd=none,hinton",
                    "teacher.epochs=1", "trainer.max_batches=2", "measure.repeats=1",
                    f"hydra.sweep.dir={tmp_path}/runs")  # fmt: skip
    out, _ = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 0, out[-3000:]
    runs = [read_metrics(p) for p in (tmp_path / "runs").glob("*/metrics.json")]
    assert len(runs) == 3 * 2 * 2
    combos = {(r["order"], r["kd"], r["target_ratio"]) for r in runs}
    assert len(combos) == 12
    assert sum(r["teacher_source"] == "trained" for r in runs) == 1  # the teacher is trained once
    # Fair budgets: every order trains its student for the same number of epochs.
    budgets = {sum(h["stage"] != "teacher" for h in r["history"]) for r in runs}
    assert budgets == {3}


def test_optuna_study_records_failures_and_goes_on(tmp_path: Path) -> None:
    proc = _kdprune(
        tmp_path,
        *_optuna_args(tmp_path, 4, "optimizer.lr=choice(0.003, 1e30)"),
    )
    out, _ = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 0, out[-3000:]
    trials = _study(tmp_path).trials
    assert len(trials) == 4
    for t in trials:  # lr 1e30 makes the loss non-finite: that trial fails, the sweep goes on
        expected = TrialState.FAIL if t.params["optimizer.lr"] > 1 else TrialState.COMPLETE
        assert t.state == expected
    assert "Best value" in out


# A kill and exactly n trials after it: test_shared_study's PostgreSQL test, in `make test`.
@pytest.mark.slow
def test_killed_study_resumes_to_exactly_n_trials(tmp_path: Path) -> None:
    proc = _gated_sweep(tmp_path, 4)
    seen = []
    for line in proc.stdout:  # read until the second trial says it is held (no timer, no poll)
        seen.append(line)
        if line.startswith("GATE: holding trial"):
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.communicate(timeout=HANG_GUARD)
    assert seen and seen[-1].startswith("GATE"), "".join(seen)[-3000:]
    first = _study(tmp_path).trials
    assert [t.state for t in first] == [TrialState.COMPLETE, TrialState.RUNNING]

    again = _kdprune(tmp_path, *_optuna_args(tmp_path, 4))
    out, _ = again.communicate(timeout=HANG_GUARD)
    assert again.returncode == 0, out[-3000:]
    trials = _study(tmp_path).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    interrupted = [t for t in trials if t.user_attrs.get("interrupted")]
    assert len(interrupted) == 1 and interrupted[0].state == TrialState.FAIL
    run_dirs = [t.user_attrs["run_dir"] for t in complete]
    assert len(set(run_dirs)) == 4  # job folders were not reused
    assert all((Path(d) / "metrics.json").exists() for d in run_dirs)
    assert "1 of n_trials=4 finished, this worker joins" in out
    # Whatever order and fine-tune share a trial draws, its student trains for the sweep's
    # budget.student_epochs (3): the search moves epochs between stages, never adds them.
    histories = [read_metrics(Path(d))["history"] for d in run_dirs]
    assert {sum(h["stage"] != "teacher" for h in history) for history in histories} == {3}
    assert {t.params["budget.finetune_epochs"] for t in complete} <= {1, 2}
