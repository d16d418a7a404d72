"""The joint order's gradual cut: sparsity on Zhu & Gupta's cubic schedule while the student
trains, each step made by the pruner's own `step_toward` (see `kdprune.pruning.Pruner`)."""

from __future__ import annotations

import copy
import functools
import logging
from typing import Any

from torch import nn

from kdprune.schedules.context import RunContext
from kdprune.schedules.stages import build_pruner

log = logging.getLogger("kdprune")


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
        self.sparsity = 0.0
        self.history: list[list[Any]] = []
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
