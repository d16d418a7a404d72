"""The orders of pruning and distillation (the `schedule` group): one class each.

An order is built from its `schedule.order` node (`order_of(cfg)`); its constructor checks its
own options, `check(cfg)` the rules it sets on the rest of the config (what it refuses), and
`run(ctx, teacher, start)` takes the run context, the frozen dense teacher and the student's
starting point (the same for every order of a comparison) and returns the run's ledger (see
`stages.finish`), reading like the order's definition. `conf/schedule/<name>.yaml` splits the one
student budget (`budget.student_epochs`, `budget.finetune_epochs`) into the epochs of the order's
stages, which the class receives. `kdprune.schedules.names` lists the orders, once.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from omegaconf import DictConfig

from kdprune.errors import ConfigError
from kdprune.instantiation import instantiate
from kdprune.pruning import pruner_class
from kdprune.run_record import VAL_ACC
from kdprune.schedules.context import RunContext
from kdprune.schedules.gradual import GradualPruning
from kdprune.schedules.names import DISTILL_THEN_PRUNE, JOINT, PRUNE_THEN_DISTILL
from kdprune.schedules.stages import build_pruner, finish, prune, train
from kdprune.schedules.start import Start, new_student, same_architecture
from kdprune.schedules.teacher_stage import Teacher
from kdprune.values import number, whole_number

PRUNE_TARGETS = ("auto", "student", "teacher")


def check_prune_target(prune_target: Any) -> None:
    """ConfigError unless `prune_target` is one of PRUNE_TARGETS."""
    if prune_target not in PRUNE_TARGETS:
        raise ConfigError(
            f"schedule.prune_target must be one of {', '.join(PRUNE_TARGETS)}, got {prune_target!r}"
        )


def resolve_prune_target(
    prune_target: str, student_init: str, same_arch: bool, prune_untrained: bool = False
) -> str:
    """What prune_then_distill prunes: `student` (its starting weights) or `teacher` (then a
    student is distilled from the pruned teacher, the reading for another architecture).

    `auto` prunes the student when it starts from trained weights or shares the teacher's
    architecture, else the teacher. Pruning an untrained student is refused unless asked for.
    """
    check_prune_target(prune_target)
    if prune_target == "auto":
        prune_target = "student" if student_init != "scratch" or same_arch else "teacher"
    if prune_target == "student" and student_init == "scratch" and not prune_untrained:
        raise ConfigError(
            "prune_then_distill would prune an untrained network (student_init=scratch): start "
            "from trained weights (student_init=teacher, trained or checkpoint), prune the "
            "teacher (schedule.prune_target=teacher), or set schedule.prune_untrained=true"
        )
    return prune_target


def _learns_while_training(cfg: DictConfig) -> bool:
    """Whether the configured pruner learns its scores while the student trains (movement)."""
    return pruner_class(cfg.prune_method).learns_while_training


class Order(ABC):
    """One order of pruning and distillation: its options, its rules and its run."""

    name: ClassVar[str]

    def check(self, cfg: DictConfig) -> None:
        """Raise ConfigError for a config this order refuses (checked before any training)."""
        return None

    def prunes_teacher(self, cfg: DictConfig) -> bool:
        """Whether the order prunes the teacher rather than the student."""
        return False

    @abstractmethod
    def run(self, ctx: RunContext, teacher: Teacher, start: Start) -> dict[str, Any]:
        """Train, prune and measure the student; return the run's ledger."""


class PruneThenDistill(Order):
    """Prune the starting weights once to the target, then recover with KD for all of the
    student's epochs (see `resolve_prune_target` for the reading that prunes the teacher)."""

    name = PRUNE_THEN_DISTILL

    def __init__(
        self, finetune_epochs: int, prune_target: str = "auto", prune_untrained: bool = False
    ) -> None:
        check_prune_target(prune_target)
        self.finetune_epochs, self.prune_target = finetune_epochs, prune_target
        self.prune_untrained = bool(prune_untrained)

    def target(self, cfg: DictConfig, student_init: str) -> str:
        """What this run prunes, `student` or `teacher` (ConfigError: an untrained student)."""
        return resolve_prune_target(
            self.prune_target, student_init, same_architecture(cfg), self.prune_untrained
        )

    def check(self, cfg: DictConfig) -> None:
        """An untrained student is not pruned unless asked for, and a method that learns while
        the student trains (movement) has no training before this order prunes."""
        self.target(cfg, cfg.student_init)
        if _learns_while_training(cfg):
            raise ConfigError(
                f"prune_method={cfg.prune_method.name} learns its scores while the student "
                "trains, and prune_then_distill prunes before any training: use schedule=joint "
                "or distill_then_prune (or a one-shot criterion such as prune_method=taylor)"
            )

    def prunes_teacher(self, cfg: DictConfig) -> bool:
        """True when `prune_target` resolves to the teacher."""
        return self.target(cfg, cfg.student_init) == "teacher"

    def run(self, ctx: RunContext, teacher: Teacher, start: Start) -> dict[str, Any]:
        """Prune the student's start, then distill; or prune the teacher, then distill from it."""
        if self.target(ctx.cfg, start.init) == "teacher":
            return self._prune_teacher_then_distill(ctx, teacher, start)
        student = new_student(ctx, start)
        dense = copy.deepcopy(student)
        step = prune(ctx, student)
        ctx.mark_cut(dense, student)
        train(ctx, "distill", student, teacher, self.finetune_epochs)
        result = finish(
            ctx, dense, student, step.result.history, step.val_acc_after, step.result.round_to
        )
        return {**result, "prune_target": "student"}

    def _prune_teacher_then_distill(
        self, ctx: RunContext, teacher: Teacher, start: Start
    ) -> dict[str, Any]:
        """Prune a copy of the teacher, then distill the student from the pruned teacher."""
        pruned = copy.deepcopy(teacher.module).requires_grad_(True)
        step = prune(ctx, pruned)
        ctx.mark_cut(teacher.module, pruned)
        pruned.eval().requires_grad_(False)
        pruned_teacher = Teacher(pruned, {VAL_ACC: step.val_acc_after}, "pruned teacher", None)
        student = new_student(ctx, start)
        dense = copy.deepcopy(student)
        train(ctx, "distill", student, pruned_teacher, self.finetune_epochs)
        return {
            **finish(ctx, dense, student, None, None),
            "prune_target": "teacher",
            "pruned_teacher_val_acc": step.val_acc_after,
            "pruned_teacher_history_len": len(step.result.history or []),
        }


class DistillThenPrune(Order):
    """Train the student with KD, prune it to the target, then fine-tune (with KD unless none)."""

    name = DISTILL_THEN_PRUNE

    def __init__(self, distill_epochs: int, finetune_epochs: int) -> None:
        self.distill_epochs, self.finetune_epochs = distill_epochs, finetune_epochs

    def check(self, cfg: DictConfig) -> None:
        """A method that learns while the student trains needs the distill stage's epochs."""
        if _learns_while_training(cfg) and int(self.distill_epochs) < 1:
            raise ConfigError(
                f"prune_method={cfg.prune_method.name} learns its scores in distill_then_prune's "
                "distill stage, which has no epochs (budget.finetune_epochs equals "
                "budget.student_epochs)"
            )

    def run(self, ctx: RunContext, teacher: Teacher, start: Start) -> dict[str, Any]:
        """Distill (the pruner learning alongside, if it does), prune, fine-tune."""
        student = new_student(ctx, start)
        pruner = build_pruner(ctx, student)
        hook = pruner.training_hook()
        train(ctx, "distill", student, teacher, self.distill_epochs, after_backward=hook)
        dense = copy.deepcopy(student)
        step = prune(ctx, student, pruner)
        ctx.mark_cut(dense, student)
        train(ctx, "finetune", student, teacher, self.finetune_epochs)
        return finish(
            ctx, dense, student, step.result.history, step.val_acc_after, step.result.round_to
        )


class Joint(Order):
    """Train with KD while sparsity rises from 0 to the target (cubic schedule, `pruning_steps`
    prunings between `pruning_start` and `pruning_end`, fractions of the joint stage), then
    fine-tune."""

    name = JOINT

    def __init__(
        self,
        joint_epochs: int,
        finetune_epochs: int,
        pruning_start: float = 0.0,
        pruning_end: float = 0.75,
        pruning_steps: int = 8,
    ) -> None:
        whole_number(joint_epochs, "schedule.joint_epochs", 1)
        whole_number(pruning_steps, "schedule.pruning_steps", 1)
        number(pruning_start, "schedule.pruning_start", 0.0, 1.0)
        if number(pruning_end, "schedule.pruning_end", 0.0, 1.0) <= pruning_start:
            raise ConfigError(
                f"schedule.pruning_end ({pruning_end}) must come after pruning_start "
                f"({float(pruning_start)})"
            )
        self.joint_epochs, self.finetune_epochs = joint_epochs, finetune_epochs
        self.pruning_start, self.pruning_end = pruning_start, pruning_end
        self.pruning_steps = pruning_steps

    def check(self, cfg: DictConfig) -> None:
        """Feature KD cannot follow channels removed while training."""
        if cfg.kd.name == "fitnet" and pruner_class(cfg.prune_method).kind == "structured":
            raise ConfigError(
                "kd=fitnet cannot follow channels that schedule=joint removes while training; "
                "use kd=hinton or kd=attention"
            )

    def run(self, ctx: RunContext, teacher: Teacher, start: Start) -> dict[str, Any]:
        """The joint stage with its gradual cut, then fine-tuning."""
        student = new_student(ctx, start)
        dense = copy.deepcopy(student)
        steps_per_epoch = len(ctx.loaders.train)
        if ctx.cfg.trainer.max_batches is not None:
            steps_per_epoch = min(steps_per_epoch, int(ctx.cfg.trainer.max_batches))
        gradual = GradualPruning(
            ctx, student, self.joint_epochs * steps_per_epoch, self.pruning_start,
            self.pruning_end, self.pruning_steps, dense,
        )  # fmt: skip
        train(
            ctx, "joint", student, teacher, self.joint_epochs,
            after_backward=gradual.after_backward, step_hooks=[gradual], select_on_val=False,
        )  # fmt: skip
        if ctx.cut is None:  # the last pruning point did not prune (nothing left to mask)
            ctx.mark_cut(dense, student)
        after_prune_val_acc = ctx.evaluate(student, "val")["acc"]
        train(ctx, "finetune", student, teacher, self.finetune_epochs)
        return finish(ctx, dense, student, gradual.history, after_prune_val_acc, gradual.round_to)


# conf/schedule/*.yaml build the orders through these names (`order._target_`), which every run's
# config, and so its fingerprint, records: they stay, naming the classes.
prune_then_distill, distill_then_prune, joint = PruneThenDistill, DistillThenPrune, Joint


def order_of(cfg: DictConfig) -> Order:
    """The configured order, built from `schedule.order`. The node keeps `_partial_: true` from
    the days when orders were functions: it is part of every run's recorded config."""
    return instantiate(cfg.schedule.order, _partial_=False)
