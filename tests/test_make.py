"""The Makefile's script interface: PRUNE_RATIO=0.7 make run and friends become overrides."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import torch

from kdprune.app import run
from kdprune.models import lenet5

REPO = Path(__file__).resolve().parents[1]


def make_command(target: str, *variables: str, env: dict[str, str] | None = None) -> list[str]:
    """The kdprune command line `make -n target` would run (nothing is run)."""
    done = subprocess.run(
        ["make", "-n", "--no-print-directory", target, *variables],
        cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    (line,) = [ln for ln in done.stdout.splitlines() if ln.split()[1:3] == ["-m", "kdprune"]]
    return shlex.split(line)[3:]  # after `.venv/bin/python -m kdprune`


def test_no_variables_no_overrides() -> None:
    assert make_command("run") == []


@pytest.mark.parametrize("how", ["command line", "environment"])
def test_variables_become_overrides(how: str) -> None:
    values = {"PRUNE_RATIO": "0.7", "PRUNE_METHOD": "taylor", "FINETUNE_EPOCHS": "2",
              "TEACHER_CKPT": "/data/my teacher.pt"}  # fmt: skip
    if how == "environment":
        args = make_command("run", "ARGS=kd=none", env=values)
    else:
        args = make_command("run", "ARGS=kd=none", *(f"{k}={v}" for k, v in values.items()))
    assert args == ["prune_method=taylor", "prune_method.ratio=0.7",
                    "teacher.checkpoint=/data/my teacher.pt", "budget.finetune_epochs=2",
                    "kd=none"]  # fmt: skip


def test_nproc_starts_the_run_on_that_many_ranks() -> None:
    done = subprocess.run(
        ["make", "-n", "--no-print-directory", "run", "NPROC=2", "ARGS=kd=none"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = done.stdout.splitlines()[-1]
    assert shlex.split(line)[1:] == ["-m", "kdprune.launch", "--nproc", "2", "kd=none"]
    assert make_command("run", "NPROC=1") == []  # one rank: the plain command


def test_sweep_targets_read_them_too() -> None:
    assert make_command("sweep-orders", "PRUNE_METHOD=fpgm") == ["-m", "+sweep=orders",
                                                                 "prune_method=fpgm"]  # fmt: skip


def test_a_trained_checkpoint_is_pruned_and_finetuned_without_a_teacher_run(
    make_cfg, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    student, teacher = tmp_path / "student.pt", tmp_path / "teacher.pt"
    torch.save(lenet5(10, 1, 8).state_dict(), student)
    torch.save(lenet5(10, 1, 8).state_dict(), teacher)
    env = {"STUDENT_CKPT": str(student), "TEACHER_CKPT": str(teacher), "FINETUNE_EPOCHS": "1",
           "PRUNE_RATIO": "0.5"}  # fmt: skip
    metrics = run(make_cfg(*make_command("run", env=env)), tmp_path / "run")
    assert metrics["teacher_source"] == "checkpoint"
    assert [h["stage"] for h in metrics["history"]] == ["distill"]  # one fine-tune epoch, no more
    assert metrics["order"] == "prune_then_distill" and metrics["macs_speedup"] > 1.5
    assert not (tmp_path / "cache").exists()  # no teacher was trained or cached
