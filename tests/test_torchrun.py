"""`python -m kdprune.launch --nproc 2` (torchrun, gloo, one thread per rank) end to end on
digits: a rank that dies ends the job in one line and leaves no result; the same command then
completes, rank 0 alone writing, both ranks holding the same pruned model. Faults come at a known
step (KDPRUNE_FAULT, kdprune.faults), never from a timer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.compose import run_args

from kdprune.results import read_metrics

# One distill epoch, then two fine-tuning ones, of three batches each.
FAST = ("budget.student_epochs=3", "budget.finetune_epochs=2", "trainer.max_batches=3",
        "teacher.epochs=2", "measure.repeats=1")  # fmt: skip
RUN_FILES = {".hydra", "app.log", "metrics.json", "model.pt", "dense.pt", "test_predictions.npy"}


def launch(tmp_path: Path, run: str, *extra: str, fault: str | None = None):
    """The launcher on two ranks, in tmp_path (so any file a rank wrote is found there)."""
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    env.pop("KDPRUNE_FAULT", None)
    if fault:
        env["KDPRUNE_FAULT"] = fault
    args = run_args(tmp_path, *FAST, f"hydra.run.dir={tmp_path / run}", *extra)
    command = [sys.executable, "-m", "kdprune.launch", "--nproc", "2", *args]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=1500,
                          env=env)  # fmt: skip


def _numbers(metrics: dict) -> dict:
    keep = ("test_acc", "val_acc", "test_loss", "after_prune_val_acc", "architecture_sha256")
    history = [{k: v for k, v in r.items() if k != "seconds"} for r in metrics["history"]]
    return {**{k: metrics[k] for k in keep}, "history": history}


def test_a_dead_rank_ends_the_job_in_one_line_and_the_same_command_completes(
    tmp_path: Path,
) -> None:
    died = launch(tmp_path, "run", fault="1:finetune:1:2:exit")
    assert died.returncode == 3, died.stderr[-3000:]
    (line,) = died.stderr.strip().splitlines()
    assert line.startswith("kdprune: error: rank 1 of 2 exited with code 3; the job stopped")
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not list((tmp_path / "run").glob("*.pt")) and not list(tmp_path.rglob("*.tmp"))

    rerun = launch(tmp_path, "run")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    metrics = read_metrics(tmp_path / "run")
    assert (metrics["world_size"], metrics["backend"]) == (2, "gloo")
    assert metrics["teacher_source"] == "cache"  # trained once, by the first attempt
    assert metrics["resumed"]  # the distill stage finished before rank 1 died: restored
    by_rank = metrics["architecture_sha256_by_rank"]
    assert len(by_rank) == 2 and len(set(by_rank)) == 1  # both ranks: the same pruned model
    # Rank 0 alone wrote: one run's files, one log of each epoch, nothing else anywhere here.
    assert {p.name for p in (tmp_path / "run").iterdir()} == RUN_FILES
    log = (tmp_path / "run" / "app.log").read_text()
    assert log.count("finetune epoch 1:") == 1
    assert {p.name for p in tmp_path.iterdir()} == {"cache", "run"}
    assert not list((tmp_path / "cache" / "state").glob("*/*.pt"))  # done: no state kept


@pytest.mark.slow  # test_resume covers the resume in one process, the test above on two ranks
def test_two_ranks_resume_after_sigterm_with_the_numbers_of_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    whole = launch(tmp_path, "whole", "budget.student_epochs=6", "budget.finetune_epochs=3")
    assert whole.returncode == 0, whole.stderr[-3000:]
    stopped = launch(tmp_path, "run", "budget.student_epochs=6", "budget.finetune_epochs=3",
                     fault="1:distill:3:2:sigterm")  # fmt: skip
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert stopped.stderr.strip().startswith("kdprune: stopped by SIGTERM")
    assert not (tmp_path / "run" / "metrics.json").exists()
    resumed = launch(tmp_path, "run", "budget.student_epochs=6", "budget.finetune_epochs=3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ran, reference = read_metrics(tmp_path / "run"), read_metrics(tmp_path / "whole")
    assert ran["resumed"] and "distill: resumed after epoch 3 of 3" in resumed.stdout
    assert _numbers(ran) == _numbers({**reference, "history": reference["history"][2:]})


@pytest.mark.slow  # the collective timeout itself: test_distributed's spawned ranks (2 s)
def test_a_hung_rank_ends_the_job_within_the_collective_timeout(tmp_path: Path) -> None:
    hung = launch(tmp_path, "run", "distributed.timeout_s=60", fault="1:finetune:1:2:hang")
    assert hung.returncode == 1, hung.stderr[-3000:]
    (line,) = hung.stderr.strip().splitlines()
    assert line.startswith("kdprune: error: rank 0 of 2: a collective failed (Timed out")
    assert not (tmp_path / "run" / "metrics.json").exists()
