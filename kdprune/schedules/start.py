"""Where the student starts: one starting point for every order of a comparison.

`student_init` is `teacher` (the teacher's weights; same architecture only), `trained` (the dense
trained network of the student's architecture — the teacher itself when both share it), `scratch`
(freshly initialised from the run's seed) or `checkpoint` (`student_checkpoint`, a state_dict).
Every run records which weights it started from and how many epochs had shaped them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from kdprune.schedules.context import RunContext, build_model, load_state_dict_file
from kdprune.schedules.teacher_stage import Teacher, dense_network, file_sha256

INITS = ("teacher", "trained", "scratch", "checkpoint")


@dataclass(frozen=True)
class Start:
    """The student's starting weights and what is known about them."""

    init: str
    weights: str  # which weights exactly (a cache file, a checkpoint's hash, a seed)
    inherited_epochs: int | None  # epochs that shaped them (None: unknown, a user's file)
    source: nn.Module | None = None  # a network whose weights the student copies
    checkpoint: str | None = None  # a state_dict file the student loads

    @property
    def trained(self) -> bool:
        """Whether the weights were trained (pruning them is meaningful)."""
        return self.init != "scratch"

    def record(self) -> dict[str, Any]:
        """The `start` entry of metrics.json."""
        return {
            "init": self.init,
            "weights": self.weights,
            "inherited_epochs": self.inherited_epochs,
        }


def same_architecture(cfg: DictConfig) -> bool:
    """Whether teacher and student share an architecture."""
    return cfg.teacher.model is None or cfg.teacher.model == cfg.model


def starting_point(ctx: RunContext, teacher: Teacher) -> Start:
    """The configured `student_init`, resolved to weights (trained once and cached if needed)."""
    cfg, init = ctx.cfg, ctx.cfg.student_init
    if init == "scratch":
        return Start(init, f"scratch (seed {int(cfg.seed)})", 0)
    if init == "checkpoint":
        path = str(Path(cfg.student_checkpoint).expanduser())
        return Start(init, f"checkpoint {file_sha256(path)[:16]}", None, checkpoint=path)
    if init == "teacher" or (same_architecture(cfg) and teacher.file is not None):
        return Start(init, teacher.weights, teacher.epochs, source=teacher.module)
    dense = dense_network(ctx, cfg.model)
    return Start(init, dense.weights, dense.epochs, source=dense.module)


def new_student(ctx: RunContext, start: Start) -> nn.Module:
    """A trainable student of `model` holding the starting weights."""
    cfg = ctx.cfg
    ctx.seed(2)
    student = build_model(cfg.model, ctx.device, cfg.trainer.channels_last)
    if start.checkpoint is not None:
        load_state_dict_file(student, start.checkpoint, "student")
    elif start.source is not None:
        student.load_state_dict(start.source.state_dict())
    return student.train().requires_grad_(True)
