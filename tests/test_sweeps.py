"""Sweeps end to end on digits: an orders grid, an Optuna study that fails, resumes, counts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from kdprune.results import read_metrics

REPO = Path(__file__).resolve().parents[1]
TINY = ["dataset=digits", "model=lenet5", "device=cpu", "teacher.epochs=2", "trainer.threads=1",
        "measure.repeats=2", "measure.warmup=1", "trainer.num_workers=0"]  # fmt: skip


def _kdprune(tmp_path: Path, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "kdprune", "-m", *args, *TINY], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)  # fmt: skip


def _optuna_args(tmp_path: Path, n_trials: int, *extra: str) -> list[str]:
    return ["+sweep=optuna", f"hydra.sweeper.n_trials={n_trials}",
            f"hydra.sweeper.storage=sqlite:///{tmp_path}/study.db",
            f"hydra.sweep.dir={tmp_path}/runs", *extra]  # fmt: skip


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="kdprune-optuna", storage=f"sqlite:///{tmp_path}/study.db")


def test_tiny_orders_grid_runs_every_combination(tmp_path: Path) -> None:
    proc = _kdprune(tmp_path, "+sweep=orders", "prune_method.ratio=0.3,0.6", "kd=none,hinton",
                    f"hydra.sweep.dir={tmp_path}/runs")  # fmt: skip
    out, _ = proc.communicate(timeout=600)
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
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    trials = _study(tmp_path).trials
    assert len(trials) == 4
    for t in trials:  # lr 1e30 makes the loss non-finite: that trial fails, the sweep goes on
        expected = TrialState.FAIL if t.params["optimizer.lr"] > 1 else TrialState.COMPLETE
        assert t.state == expected
    assert "Best value" in out


def test_killed_study_resumes_to_exactly_n_trials(tmp_path: Path) -> None:
    proc = _kdprune(tmp_path, *_optuna_args(tmp_path, 4), start_new_session=True)
    deadline = time.time() + 300
    killed = False
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if not (tmp_path / "study.db").exists():
            continue
        try:
            states = [t.state for t in _study(tmp_path).trials]
        except Exception:  # the study is being created
            continue
        if states.count(TrialState.COMPLETE) >= 1 and TrialState.RUNNING in states:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
    proc.communicate(timeout=60)
    assert killed, "the sweep finished before it could be killed mid-trial"
    first = _study(tmp_path).trials
    assert any(t.state == TrialState.RUNNING for t in first)

    again = _kdprune(tmp_path, *_optuna_args(tmp_path, 4))
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-3000:]
    trials = _study(tmp_path).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    interrupted = [t for t in trials if t.user_attrs.get("interrupted")]
    assert len(interrupted) == 1 and interrupted[0].state == TrialState.FAIL
    run_dirs = [t.user_attrs["run_dir"] for t in complete]
    assert len(set(run_dirs)) == 4  # job folders were not reused
    assert all((Path(d) / "metrics.json").exists() for d in run_dirs)
    assert "resuming study" in out
    # Whatever order and fine-tune share a trial draws, its student trains for the sweep's
    # budget.student_epochs (3): the search moves epochs between stages, never adds them.
    histories = [read_metrics(Path(d))["history"] for d in run_dirs]
    assert {sum(h["stage"] != "teacher" for h in history) for history in histories} == {3}
    assert {t.params["budget.finetune_epochs"] for t in complete} <= {1, 2}
