"""A kdprune Optuna sweep end to end on digits: pruned trials stop after one epoch and count; the
best trial is the best *feasible* one (in the log, optimization_results.yaml and the report); a
complete study run again says "nothing to do"; bad sweep settings are one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from helpers.compose import run_args
from omegaconf import OmegaConf
from optuna.trial import TrialState

from kdprune import cli, commands
from kdprune.results import METRICS_FILE, read_metrics
from kdprune.sweeping.one_cpu import CPU_ATTRS

TINY_SWEEP = ("+sweep=optuna", "teacher.epochs=1", "trainer.max_batches=2", "measure.repeats=1")


def _sweep(tmp_path: Path, *args: str) -> str:
    env = {**os.environ, "WANDB_MODE": "offline", "KDPRUNE_STORAGE": f"sqlite:///{tmp_path}/s.db"}
    command = [sys.executable, "-m", "kdprune", "-m", *run_args(tmp_path, *TINY_SWEEP, *args)]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="kdprune-optuna", storage=f"sqlite:///{tmp_path}/s.db")


def test_pruned_trials_stop_after_their_first_student_epoch_and_count(tmp_path: Path) -> None:
    # The threshold pruner stops any trial below 110% validation accuracy: every one, at once.
    out = _sweep(tmp_path, "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.lower=1.1",
                 "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={tmp_path}/runs")  # fmt: skip
    trials = _study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.PRUNED] * 3  # n_trials counts them
    assert all(list(t.intermediate_values) == [0] for t in trials)  # 1 of 3 student epochs
    assert not list((tmp_path / "runs").rglob(METRICS_FILE))
    assert "3 finished trials (0 complete, 3 pruned)" in out and "No best trial" in out


def test_the_best_trial_meets_the_constraint_and_a_done_study_has_nothing_to_do(
    tmp_path: Path, capsys
) -> None:
    # Maximise the MACs speed-up subject to "at most 3x": the 0.8 cut (far above 3x) is the best
    # by value and infeasible, the 0.2 cut (below 3x) is the best feasible trial.
    fixed = ["sweep_metric=macs_speedup", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2",
             "prune_method.ratio=choice(0.2,0.8)", "schedule=prune_then_distill", "kd.alpha=0.5",
             "kd.temperature=4", "budget.finetune_epochs=1",
             "hydra.sweeper.constraints.macs_speedup.min=0",
             "+hydra.sweeper.constraints.macs_speedup.max=3.0"]  # fmt: skip
    _sweep(tmp_path, *fixed, f"hydra.sweep.dir={tmp_path}/first")
    trials = sorted(_study(tmp_path).trials, key=lambda t: t.params["prune_method.ratio"])
    small, large = trials
    assert large.value > 3.0 > small.value and large.value > small.value
    assert large.constraints["macs_speedup<="] == pytest.approx(large.value - 3.0)  # > 0
    for trial in trials:  # the CPU each trial's run was measured on (kdprune/sweeping/one_cpu.py)
        metrics = read_metrics(trial.user_attrs["run_dir"])
        assert {k: trial.user_attrs[k] for k in CPU_ATTRS} == {k: metrics[k] for k in CPU_ATTRS}

    again = _sweep(tmp_path, *fixed, f"hydra.sweep.dir={tmp_path}/again")  # a new folder
    assert "nothing to do" in again and "Traceback" not in again
    results = OmegaConf.load(tmp_path / "again" / "optimization_results.yaml")
    assert results.best_trial == small.number and results.feasible_trials == 1
    assert results.best_value == pytest.approx(small.value)
    assert not (tmp_path / "again" / "0").exists()  # nothing ran

    storage = f"sqlite:///{tmp_path}/s.db"
    assert commands.main(["report", "--storage", storage, "--study", "kdprune-optuna"]) == 0
    assert f"#{small.number}: macs_speedup" in capsys.readouterr().out
    report = (tmp_path / "PRUNING_REPORT.md").read_text()
    assert f"| #{small.number} |" in report and f"| #{large.number} |" not in report


BAD_SWEEPS = [
    ("+sweep=pareto", "hydra/sweeper/pruner=median"),
    ("+sweep=optuna", "hydra.sweeper.storage=postgresql+psycopg2://me@127.0.0.1/kdprune"),
    ("+sweep=optuna", "hydra.sweeper.storage=mongodb://127.0.0.1/kdprune"),
    ("+sweep=optuna", "hydra.sweeper.n_jobs=2"),
    ("+sweep=optuna", "hydra.sweeper.heartbeat_interval=0"),
    ("+sweep=optuna", "hydra.sweeper.constraints.macs_speedup.min=fast"),
    ("+sweep=optuna", "hydra/sweeper/pruner=threshold"),  # needs a lower or upper bound
]


@pytest.mark.parametrize("args", BAD_SWEEPS, ids=lambda a: " ".join(a))
def test_bad_sweep_settings_are_one_line_and_exit_2(monkeypatch, capsys, tmp_path, args) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["kdprune", "-m", *run_args(tmp_path, *args)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("kdprune: error: "), lines
    assert not list(tmp_path.rglob("*.db")) and not (tmp_path / "outputs").exists()
