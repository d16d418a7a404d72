"""The tools around a shared study: `kdprune dashboard` serves it, `make sweep-worker` starts a
worker with the storage from $KDPRUNE_STORAGE, and submitit's launcher runs its trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest
from helpers.compose import run_args
from helpers.hang_guard import HANG_GUARD
from optuna.trial import TrialState
from test_make import make_command

from kdprune import commands
from kdprune.sweeping.budget import counts
from kdprune.sweeping.storage import open_storage


def test_dashboard_serves_a_journal_study_on_loopback(tmp_path: Path) -> None:
    url = f"journal:///{tmp_path}/study.log"
    study = optuna.create_study(study_name="watched", storage=open_storage(url))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    server = subprocess.Popen(
        [sys.executable, "-m", "kdprune", "dashboard", "--storage", url, "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        first = server.stdout.readline()  # printed once the socket listens: no waiting
        assert "at http://127.0.0.1:" in first, first + server.stdout.read()
        address = first.split(" at ")[1].split()[0]
        with urllib.request.urlopen(f"{address}api/studies") as response:
            studies = json.load(response)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["watched"]
        with urllib.request.urlopen(f"{address}api/studies/{studies[0]['study_id']}") as response:
            assert len(json.load(response)["trials"]) == 3
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.communicate(timeout=HANG_GUARD)
        finally:
            server.kill()  # a no-op once it stopped; never left behind if it did not
    assert server.returncode == 0


def test_dashboard_without_a_study_file_is_one_line(tmp_path: Path, capsys) -> None:
    assert commands.main(["dashboard", "--storage", f"sqlite:///{tmp_path}/no.db"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdprune: error: no study file") and err.count("\n") == 1, err
    assert not (tmp_path / "no.db").exists()


def test_sweep_worker_reads_the_storage_from_the_environment() -> None:
    env = {"KDPRUNE_STORAGE": "postgresql://me@db.lab/kdprune"}
    assert make_command("sweep-worker", "THREADS=1", env=env) == [
        "-m", "+sweep=optuna", "trainer.threads=1"]  # fmt: skip
    assert make_command("sweep-worker", "SWEEP=pareto", env=env) == ["-m", "+sweep=pareto"]
    env = {k: v for k, v in os.environ.items() if k != "KDPRUNE_STORAGE"}
    done = subprocess.run(["make", "-s", "sweep-worker"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], env=env)  # fmt: skip
    assert done.returncode != 0 and "KDPRUNE_STORAGE" in done.stdout + done.stderr


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_trials_of_a_shared_study(tmp_path: Path) -> None:
    """The SLURM path through submitit's local executor: two trials side by side (n_jobs=2)."""
    storage = f"sqlite:///{tmp_path}/study.db"
    args = run_args(tmp_path, "+sweep=optuna", "teacher.epochs=1", "trainer.max_batches=2",
                    "measure.repeats=1", "hydra/launcher=submitit_local", "hydra.sweeper.n_jobs=2",
                    "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={tmp_path}/runs")  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline", "KDPRUNE_STORAGE": storage}
    done = subprocess.run([sys.executable, "-m", "kdprune", "-m", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trials = optuna.load_study(study_name="kdprune-optuna", storage=storage).trials
    assert sum(counts(t) for t in trials) == 3
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert (tmp_path / "runs" / ".submitit").is_dir()  # the jobs went through submitit
    assert sorted(p.name for p in (tmp_path / "runs").iterdir() if p.name.isdigit()) == [
        "0", "1", "2"]  # fmt: skip


def test_the_shared_study_benchmark_page_says_what_was_met() -> None:
    from benchmarks.shared_study import render

    meta = {"measured": "2026-01-01T00:00:00+00:00", "commit": "abc1234", "dirty": False,
            "command": "python -m benchmarks.shared_study", "seconds": 60.0,
            "args": {"epochs": 6, "median_args": []}}  # fmt: skip
    run = {"finished": 12, "wall_s": 100.0, "loadavg_before": [1.0, 1.0, 1.0],
           "loadavg_after": [2.0, 2.0, 2.0], "command": ["-m", "+sweep=optuna"]}  # fmt: skip
    runs = {"1": {**run, "trials_per_hour": 432.0, "cpu_s_per_trial": 8.0, "cpu_s": 96.0},
            "2": {**run, "trials_per_hour": 777.6, "cpu_s_per_trial": 8.2,
                  "cpu_s": 98.4}}  # fmt: skip
    study = {"finished": 16, "pruned": 6, "best_trial": 3}
    pruning = {"runs": {"median": {**study, "student_epochs": 50, "best_val_acc": 0.880,
                                   "pruner": "MedianPruner(n_startup_trials=2)"},
                        "none": {**study, "pruned": 0, "student_epochs": 96,
                                 "best_val_acc": 0.882}},
               "epoch_share": 50 / 96, "best_gap_points": 0.2, "loadavg_before": [1.0] * 3,
               "loadavg_after": [1.0] * 3, "command": ["-m"], "meta": meta}  # fmt: skip
    page = render({"cpu": "a CPU", "cores": 2, "max_batches": 100, "pruning": pruning,
                   "throughput": {"runs": runs, "ratio": 1.8, "meta": meta}})  # fmt: skip
    assert (
        "| (f) trials/hour, 2 workers vs 1 | 777.6 vs 432.0 = 1.80× (on 0.98 vs 0.96 cores) |"
        in page
    )
    assert "50 vs 96 = 52% | ≤ 60% | yes |" in page and "0.20 points | ≤ 0.5 | yes |" in page
    assert "8.0 (one worker) and 8.2 (two)" in page and "0.96 (one) and 0.98 (two)" in page
    assert "| (g) MedianPruner(n_startup_trials=2): student epochs vs none |" in page


def test_the_shared_study_benchmark_teacher_run_passes_the_checks(tmp_path: Path) -> None:
    from benchmarks.shared_study import parse_args, teacher_argv
    from kdprune.cli import check_command_line

    assert check_command_line(teacher_argv(parse_args([]), tmp_path)) is None
