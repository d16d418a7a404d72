"""Preemption: SIGTERM during epoch 3 of 6 stops the run after that epoch; the same command
resumes at epoch 4 and ends with the numbers of a run that was never stopped."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.compose import run_args

from kdprune.app import run
from kdprune.distillation import CrossEntropyObjective
from kdprune.engine import Stage
from kdprune.engine.checkpoints import RunState, restorable, rng_state, set_rng_state
from kdprune.engine.lr_schedules import cosine
from kdprune.models import lenet5
from kdprune.pruning import BNScaleSparsity, MovementPruner, MovementScores
from kdprune.results import read_metrics

CPU = torch.device("cpu")
# distill_then_prune: 3 distill epochs, then 3 fine-tuning ones: epoch 3 of 6 is distill's last.
SIX = ("budget.student_epochs=6", "budget.finetune_epochs=3", "trainer.max_batches=3",
       "teacher.epochs=2", "measure.repeats=1")  # fmt: skip


def _stage(**kwargs) -> Stage:
    opt = partial(torch.optim.SGD, lr=0.1)
    return Stage("distill", 2, CrossEntropyObjective(), opt, cosine(), CPU, **kwargs)


def test_generators_come_back_from_a_data_only_file(tmp_path: Path) -> None:
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    torch.save(rng_state(), tmp_path / "rng.pt")
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and (first[1] == again[1]).all()
    assert first[2] == again[2]


def test_only_stages_whose_state_is_data_are_restored() -> None:
    model = lenet5(10, 1, 8)
    movement = MovementPruner(model, ratio=0.5, regularizer=MovementScores())
    assert restorable(_stage())
    assert restorable(_stage(after_backward=movement.regularize))  # scores: tensors, numbers
    assert restorable(_stage(after_backward=BNScaleSparsity(1e-4).regularize))
    assert not restorable(_stage(after_backward=lambda m: None))  # a closure: state unknown
    assert not restorable(_stage(step_hooks=[lambda m, s: False]))  # architecture may change


def test_stages_are_told_apart_by_name_architecture_and_order(tmp_path: Path) -> None:
    state = RunState(tmp_path / "state", writer=True, device=CPU)
    wide, narrow = lenet5(10, 1, 8), lenet5(10, 1, 8, widths=(6, 8))
    slots = [
        state.stage(n, m).slot
        for n, m in [("distill", wide), ("distill", wide), ("distill", narrow), ("finetune", wide)]
    ]
    assert len(set(slots)) == 4 and slots[0].endswith("-0") and slots[1].endswith("-1")
    assert slots[2].endswith("-0")


class _Stop(Exception):
    """What the test raises after an epoch, as SIGTERM stops a run once the epoch is saved."""


def _movement_fit(folder: Path, writer: bool, stop_after: int | None = None):
    """Two epochs of lenet5 on digits with movement scores growing, its state under `folder`;
    `stop_after` stops the run once that epoch is saved."""
    from kdprune.data import Augment, digits, make_loaders
    from kdprune.engine import fit, seed_everything

    loaders = make_loaders(digits(), 64, 512, CPU, Augment(), seed=0, num_workers=0)
    seed_everything(0)
    model = lenet5(10, 1, 8)
    pruner = MovementPruner(model, ratio=0.5, regularizer=MovementScores())

    def log(record: dict) -> None:
        if record["epoch"] == stop_after:
            raise _Stop

    stage = Stage("distill", 2, CrossEntropyObjective(), partial(torch.optim.AdamW, lr=0.003),
                  cosine(), CPU, progress=False, max_batches=3, log=log,
                  after_backward=pruner.training_hook(),
                  state=RunState(folder, writer, CPU))  # fmt: skip
    history = fit(model, loaders.train, loaders.val, stage)
    after = torch.rand(2)  # the generators after the stage
    return model.state_dict(), pruner.regularizer, history, after


def test_a_stage_resumes_and_restores_what_the_pruner_learned(tmp_path: Path) -> None:
    whole = _movement_fit(tmp_path / "whole", writer=True)
    with pytest.raises(_Stop):
        _movement_fit(tmp_path / "run", writer=True, stop_after=1)
    (saved,) = (tmp_path / "run").glob("distill-*-0.pt")
    entry = torch.load(saved, weights_only=True)
    assert (entry["finished"], entry["epoch"]) == (False, 1) and entry["learned"]["regularizer"]
    resumed = _movement_fit(tmp_path / "run", writer=True)  # epoch 2 only, then saved finished
    restored = _movement_fit(tmp_path / "run", writer=False)  # nothing trained: all restored
    for state, scores, history, after in (resumed, restored):
        assert all(torch.equal(state[k], whole[0][k]) for k in whole[0])
        assert scores.steps == whole[1].steps == 6  # 3 batches x 2 epochs, scored once each
        assert all(torch.equal(scores.scores[k], whole[1].scores[k]) for k in whole[1].scores)
        strip = [{k: v for k, v in r.items() if k != "seconds"} for r in history]
        assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in whole[2]]
        assert torch.equal(after, whole[3])


def _kdprune(tmp_path: Path, run: str, *extra: str, fault: str | None = None):
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("KDPRUNE_FAULT", None)
    if fault:
        env["KDPRUNE_FAULT"] = fault
    args = run_args(tmp_path, *SIX, f"hydra.run.dir={tmp_path / run}", *extra)
    return subprocess.run([sys.executable, "-m", "kdprune", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900, env=env)  # fmt: skip


def _numbers(metrics: dict) -> dict:
    keep = ("test_acc", "val_acc", "test_loss", "val_loss", "after_prune_val_acc",
            "architecture_sha256", "params_after", "macs_after")  # fmt: skip
    history = [{k: v for k, v in r.items() if k != "seconds"} for r in metrics["history"]]
    return {**{k: metrics[k] for k in keep}, "history": history}


def test_sigterm_in_epoch_3_of_6_resumes_at_epoch_4_with_the_same_numbers(tmp_path: Path) -> None:
    whole = _kdprune(tmp_path, "whole")  # trains and caches the teacher the others reuse
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert not any((tmp_path / "cache" / "state").glob("*/*.pt"))  # a finished run keeps none
    stopped = _kdprune(tmp_path, "run", fault="0:distill:3:2:sigterm")
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    (line,) = stopped.stderr.strip().splitlines()
    assert line.startswith("kdprune: stopped by SIGTERM")
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not list((tmp_path / "run").glob("*.pt")) and not list(tmp_path.rglob("*.tmp"))
    resumed = _kdprune(tmp_path, "run")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = resumed.stdout + (tmp_path / "run" / "app.log").read_text()
    assert "distill: resumed after epoch 3 of 3" in log
    ran, whole_metrics = read_metrics(tmp_path / "run"), read_metrics(tmp_path / "whole")
    assert ran["resumed"] and not whole_metrics["resumed"]
    # The teacher's two epochs were trained by the first run only (then cached).
    assert _numbers(ran) == _numbers({**whole_metrics, "history": whole_metrics["history"][2:]})


def test_resume_off_keeps_no_state(tmp_path: Path, make_cfg) -> None:
    cfg = make_cfg("resume=false", "trainer.max_batches=2", "budget.student_epochs=2",
                   "budget.finetune_epochs=1", "teacher.epochs=1")  # fmt: skip
    metrics = run(cfg, tmp_path / "run")
    assert metrics["resumed"] is False and not (tmp_path / "cache" / "state").exists()
