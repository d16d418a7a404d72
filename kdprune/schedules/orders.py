"""The three orders of pruning and distillation; each reads like its definition.

Every order takes the run context and the frozen dense teacher, and returns the run's
ledger (see `stages.finish`). Epoch counts come from the `schedule` config group.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from torch import nn

from kdprune.models import classifier_path
from kdprune.pruning import pruner_class
from kdprune.schedules.context import RunContext
from kdprune.schedules.stages import build_pruner, finish, new_student, prune, train
from kdprune.schedules.teacher import Teacher

log = logging.getLogger("kdprune")


def _regularizer(pruner):
    """`after_backward` for training that precedes pruning (BN-scale sparsity); None if unused."""
    return pruner.regularize if getattr(pruner, "regularizer", None) is not None else None


def prune_then_distill(
    ctx: RunContext,
    teacher: Teacher,
    finetune_epochs: int,
    prune_target: str = "student",
) -> dict[str, Any]:
    """Start from trained weights, prune once to the target, then recover with KD.

    `prune_target: student` prunes a copy of the trained weights (the teacher's own when the
    student shares its architecture) and distills it from the dense teacher. `prune_target:
    teacher` is the other reading: prune the teacher, then distill a fresh student from it.
    """
    if prune_target == "teacher":
        return _prune_teacher_then_distill(ctx, teacher, finetune_epochs)
    student = new_student(ctx, teacher, init="teacher" if _same_arch(ctx) else "scratch")
    dense = copy.deepcopy(student)
    step = prune(ctx, student)
    train(ctx, "distill", student, teacher, finetune_epochs)
    result = finish(ctx, dense, student, step.result.history, step.val_acc_after)
    return {**result, "prune_target": "student"}


def _prune_teacher_then_distill(
    ctx: RunContext, teacher: Teacher, finetune_epochs: int
) -> dict[str, Any]:
    """Prune a copy of the teacher, then distill a fresh student from the pruned teacher."""
    pruned = copy.deepcopy(teacher.module).requires_grad_(True)
    step = prune(ctx, pruned)
    pruned.eval().requires_grad_(False)
    pruned_teacher = Teacher(pruned, {"val_acc": step.val_acc_after})
    student = new_student(ctx, teacher, init="scratch")
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
    distill_epochs: int,
    finetune_epochs: int,
    student_init: str = "scratch",
) -> dict[str, Any]:
    """Train the student with KD, prune it to the target, then fine-tune (with KD unless none)."""
    student = new_student(ctx, teacher, init=student_init)
    pruner = build_pruner(ctx, student)
    train(ctx, "distill", student, teacher, distill_epochs, after_backward=_regularizer(pruner))
    dense = copy.deepcopy(student)
    step = prune(ctx, student, pruner)
    train(ctx, "finetune", student, teacher, finetune_epochs)
    return finish(ctx, dense, student, step.result.history, step.val_acc_after)


def _units(model: nn.Module) -> int:
    """Prunable units: conv output channels plus hidden linear features (not the classifier's)."""
    classifier = model.get_submodule(classifier_path(model))
    return sum(
        m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features
        for m in model.modules()
        if isinstance(m, nn.modules.conv._ConvNd | nn.Linear) and m is not classifier
    )


def unit_ratio(dense: nn.Module, pruned: nn.Module) -> float:
    """Fraction of prunable units (channels and hidden features) removed so far."""
    return 1.0 - _units(pruned) / _units(dense)


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
    joint stage's optimizer steps), prunes from the current sparsity to the scheduled one. The
    configured ratio is a fraction of the *original* model, so each step prunes
    1 - (1 - s_t) / (1 - s_now) of what is left, where s_now is measured (channel counts round,
    and Torch-Pruning removes at least one channel per layer, so the schedule must not compound
    the rounding). Returns True when it pruned, so the engine rebuilds the optimizer.
    """

    def __init__(
        self,
        ctx: RunContext,
        dense: nn.Module,
        total_steps: int,
        start: float,
        end: float,
        steps: int,
    ):
        self.ctx, self.dense, self.target = ctx, dense, float(ctx.cfg.prune_method.ratio)
        self.structured = pruner_class(ctx.cfg.prune_method).kind == "structured"
        self.first, self.last = int(start * total_steps), max(int(end * total_steps), 1)
        span = max(self.last - self.first, 1)
        self.points = sorted({self.first + round(span * (i + 1) / steps) for i in range(steps)})
        self.sparsity, self.history, self.seconds = 0.0, [], 0.0

    def __call__(self, model: nn.Module, step: int) -> bool:
        if step not in self.points:
            return False
        scheduled = cubic_sparsity(step, self.first, self.last, self.target)
        now = unit_ratio(self.dense, model) if self.structured else self.sparsity
        relative = 1 - (1 - scheduled) / (1 - now)
        if relative <= 1e-6:
            return False
        cap = float(self.ctx.cfg.prune_method.get("max_layer_ratio", 0.9))
        result = build_pruner(self.ctx, model, ratio=min(relative, cap)).apply()
        self.history += result.history or []
        self.sparsity, self.seconds = scheduled, self.seconds + result.seconds
        log.info("joint: step %d, sparsity %.3f of %.3f", step, scheduled, self.target)
        return True


def joint(
    ctx: RunContext,
    teacher: Teacher,
    joint_epochs: int,
    finetune_epochs: int,
    pruning_start: float = 0.0,
    pruning_end: float = 0.75,
    pruning_steps: int = 8,
    student_init: str = "scratch",
) -> dict[str, Any]:
    """Train with KD while sparsity rises from 0 to the target (cubic schedule), then fine-tune."""
    student = new_student(ctx, teacher, init=student_init)
    dense = copy.deepcopy(student)
    steps_per_epoch = len(ctx.loaders.train)
    if ctx.cfg.trainer.max_batches is not None:
        steps_per_epoch = min(steps_per_epoch, int(ctx.cfg.trainer.max_batches))
    gradual = GradualPruning(
        ctx, dense, joint_epochs * steps_per_epoch, pruning_start, pruning_end, pruning_steps
    )
    train(ctx, "joint", student, teacher, joint_epochs, step_hooks=[gradual], select_on_val=False)
    ctx.timings["prune"] = gradual.seconds
    after_prune_val_acc = ctx.evaluate(student, "val")["acc"]
    train(ctx, "finetune", student, teacher, finetune_epochs)
    return finish(ctx, dense, student, gradual.history, after_prune_val_acc)


def _same_arch(ctx: RunContext) -> bool:
    return ctx.cfg.teacher.model is None or ctx.cfg.teacher.model == ctx.cfg.model
