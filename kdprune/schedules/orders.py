"""The three orders of pruning and distillation; each reads like its definition.

Every order takes the run context, the frozen dense teacher and the student's starting point (the
same for every order of a comparison), and returns the run's ledger (see `stages.finish`). Epoch
counts come from the `schedule` config group, which splits one student budget for all orders.
"""

from __future__ import annotations

import copy
import functools
import logging
from typing import Any

from torch import nn

from kdprune.errors import ConfigError
from kdprune.schedules.context import RunContext
from kdprune.schedules.stages import build_pruner, finish, prune, train
from kdprune.schedules.start import Start, new_student, same_architecture
from kdprune.schedules.teacher import Teacher

log = logging.getLogger("kdprune")

PRUNE_TARGETS = ("auto", "student", "teacher")


def resolve_prune_target(
    prune_target: str, student_init: str, same_arch: bool, prune_untrained: bool = False
) -> str:
    """What prune_then_distill prunes: `student` (its starting weights) or `teacher` (then a
    student is distilled from the pruned teacher, the reading for another architecture).

    `auto` prunes the student when it starts from trained weights or shares the teacher's
    architecture, else the teacher. Pruning an untrained student is refused unless asked for.
    """
    if prune_target not in PRUNE_TARGETS:
        raise ConfigError(
            f"schedule.prune_target must be one of {', '.join(PRUNE_TARGETS)}, got {prune_target!r}"
        )
    if prune_target == "auto":
        prune_target = "student" if student_init != "scratch" or same_arch else "teacher"
    if prune_target == "student" and student_init == "scratch" and not prune_untrained:
        raise ConfigError(
            "prune_then_distill would prune an untrained network (student_init=scratch): start "
            "from trained weights (student_init=teacher, trained or checkpoint), prune the "
            "teacher (schedule.prune_target=teacher), or set schedule.prune_untrained=true"
        )
    return prune_target


def prune_then_distill(
    ctx: RunContext,
    teacher: Teacher,
    start: Start,
    finetune_epochs: int,
    prune_target: str = "auto",
    prune_untrained: bool = False,
) -> dict[str, Any]:
    """Prune the starting weights once to the target, then recover with KD (see
    `resolve_prune_target` for the reading that prunes the teacher instead)."""
    target = resolve_prune_target(
        prune_target, start.init, same_architecture(ctx.cfg), prune_untrained
    )
    if target == "teacher":
        return _prune_teacher_then_distill(ctx, teacher, start, finetune_epochs)
    student = new_student(ctx, start)
    dense = copy.deepcopy(student)
    step = prune(ctx, student)
    ctx.mark_cut(dense, student)
    train(ctx, "distill", student, teacher, finetune_epochs)
    result = finish(
        ctx, dense, student, step.result.history, step.val_acc_after, step.result.round_to
    )
    return {**result, "prune_target": "student"}


def _prune_teacher_then_distill(
    ctx: RunContext, teacher: Teacher, start: Start, finetune_epochs: int
) -> dict[str, Any]:
    """Prune a copy of the teacher, then distill the student from the pruned teacher."""
    pruned = copy.deepcopy(teacher.module).requires_grad_(True)
    step = prune(ctx, pruned)
    ctx.mark_cut(teacher.module, pruned)
    pruned.eval().requires_grad_(False)
    pruned_teacher = Teacher(pruned, {"val_acc": step.val_acc_after}, "pruned teacher", None)
    student = new_student(ctx, start)
    dense = copy.deepcopy(student)
    train(ctx, "distill", student, pruned_teacher, finetune_epochs)
    return {
        **finish(ctx, dense, student, None, None),
        "prune_target": "teacher",
        "pruned_teacher_val_acc": step.val_acc_after,
        "pruned_teacher_history_len": len(step.result.history or []),
    }


def distill_then_prune(
    ctx: RunContext,
    teacher: Teacher,
    start: Start,
    distill_epochs: int,
    finetune_epochs: int,
) -> dict[str, Any]:
    """Train the student with KD, prune it to the target, then fine-tune (with KD unless none)."""
    student = new_student(ctx, start)
    pruner = build_pruner(ctx, student)
    hook = pruner.training_hook()
    train(ctx, "distill", student, teacher, distill_epochs, after_backward=hook)
    dense = copy.deepcopy(student)
    step = prune(ctx, student, pruner)
    ctx.mark_cut(dense, student)
    train(ctx, "finetune", student, teacher, finetune_epochs)
    return finish(
        ctx, dense, student, step.result.history, step.val_acc_after, step.result.round_to
    )


def cubic_sparsity(step: int, start: int, end: int, target: float, initial: float = 0.0) -> float:
    """Zhu & Gupta (2017): s_t = s_f + (s_i - s_f)(1 - (t - t0)/(t_end - t0))^3, held outside."""
    if step <= start:
        return initial
    if step >= end:
        return target
    return target + (initial - target) * (1 - (step - start) / (end - start)) ** 3


class GradualPruning:
    """A step hook that raises sparsity on the cubic schedule while the student trains.

    At each of `steps` evenly spaced pruning points between `start` and `end` (fractions of the
    joint stage's optimizer steps) the pruner moves the student from the last step's sparsity to
    the scheduled one (`Pruner.step_toward`; `begin_gradual` fixed the end point before training):
    structured pruning moves every layer's width towards the one-shot cut's, the fraction
    s_t / s_final of the way, so the last point lands on exactly those widths; masked pruning
    masks 1 - (1 - s_t) / (1 - s_now) of the weights still left, which compounds to exactly
    s_final; low-rank decomposition moves every layer's ranks from full towards those of the
    one-shot cut (planned at the first point), re-decomposing the trained layer each time.
    Returns True when it pruned, so the engine rebuilds the optimizer. `after_backward` is the
    pruner's training hook (BN-scale sparsity, movement scores; None if it has none), and what
    it learns (`carried`) is handed to the pruner of every step.
    """

    def __init__(
        self,
        ctx: RunContext,
        model: nn.Module,
        total_steps: int,
        start: float,
        end: float,
        steps: int,
        dense_model: nn.Module | None = None,
    ):
        self.ctx, self.target = ctx, float(ctx.cfg.prune_method.ratio)
        self.dense_model = dense_model if dense_model is not None else copy.deepcopy(model)
        self.first, self.last = int(start * total_steps), max(int(end * total_steps), 1)
        span = max(self.last - self.first, 1)
        self.points = sorted({self.first + round(span * (i + 1) / steps) for i in range(steps)})
        self.sparsity, self.history = 0.0, []
        self.pruner = build_pruner(ctx, model)
        self.after_backward, self.carried = self.pruner.training_hook(), self.pruner.carried()
        with ctx.timed("prune"):
            self.pruner.begin_gradual()
        # The multiple the planned widths were rounded to (None: not rounded, or not structured).
        self.round_to = self.pruner.round_to

    def __call__(self, model: nn.Module, step: int) -> bool:
        if step not in self.points:
            return False
        scheduled = cubic_sparsity(step, self.first, self.last, self.target)
        # A step's pruner is built anew on the model as it is, sharing what this one learns.
        rebuild = functools.partial(build_pruner, self.ctx, model, self.carried)
        with self.ctx.timed("prune"):
            result = self.pruner.step_toward(self.sparsity, scheduled, self.target, rebuild)
        if result is None:
            return False
        self.history += result.history or []
        self.sparsity = scheduled
        if step == self.points[-1]:  # the final cut: later epochs are the sweep pruner's
            self.ctx.mark_cut(self.dense_model, model)
        log.info("joint: step %d, sparsity %.3f of %.3f", step, scheduled, self.target)
        return True


def joint(
    ctx: RunContext,
    teacher: Teacher,
    start: Start,
    joint_epochs: int,
    finetune_epochs: int,
    pruning_start: float = 0.0,
    pruning_end: float = 0.75,
    pruning_steps: int = 8,
) -> dict[str, Any]:
    """Train with KD while sparsity rises from 0 to the target (cubic schedule), then fine-tune."""
    student = new_student(ctx, start)
    dense = copy.deepcopy(student)
    steps_per_epoch = len(ctx.loaders.train)
    if ctx.cfg.trainer.max_batches is not None:
        steps_per_epoch = min(steps_per_epoch, int(ctx.cfg.trainer.max_batches))
    gradual = GradualPruning(
        ctx, student, joint_epochs * steps_per_epoch, pruning_start, pruning_end, pruning_steps,
        dense,
    )  # fmt: skip
    train(
        ctx, "joint", student, teacher, joint_epochs,
        after_backward=gradual.after_backward, step_hooks=[gradual], select_on_val=False,
    )  # fmt: skip
    if ctx.cut is None:  # the last pruning point did not prune (nothing left to mask)
        ctx.mark_cut(dense, student)
    after_prune_val_acc = ctx.evaluate(student, "val")["acc"]
    train(ctx, "finetune", student, teacher, finetune_epochs)
    return finish(ctx, dense, student, gradual.history, after_prune_val_acc, gradual.round_to)
