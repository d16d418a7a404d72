"""Feature-map objectives for the engine: attention transfer and FitNet hints on hooked layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kdprune.distillation.features import (
    capture_features,
    check_layers,
    collect,
    probe_feature_shapes,
)
from kdprune.distillation.frozen_teacher import check_distinct, freeze_teacher
from kdprune.distillation.kd_checks import layer_paths
from kdprune.distillation.losses import AttentionTransferLoss, FitNetLoss, KDLoss
from kdprune.errors import ConfigError


class _FeatureObjective:
    """Shared part of feature distillation: KDLoss on logits plus a loss on hooked feature maps.

    The teacher always runs (its features are needed), so cached teacher logits are ignored.
    """

    needs_teacher = True
    feature_loss: nn.Module

    def __init__(
        self,
        *,
        temperature: float,
        alpha: float,
        student_layers: Sequence[str],
        teacher_layers: Sequence[str],
        student: nn.Module,
        teacher: nn.Module | None,
        label_smoothing: float,
    ) -> None:
        self.kd_loss = KDLoss(temperature, alpha, label_smoothing)
        self.student_layers = layer_paths(student_layers, "kd.student_layers")
        self.teacher_layers = layer_paths(teacher_layers, "kd.teacher_layers")
        if len(self.student_layers) != len(self.teacher_layers):
            raise ConfigError(
                f"kd.student_layers and kd.teacher_layers must pair up one to one, got "
                f"{len(self.student_layers)} and {len(self.teacher_layers)} paths."
            )
        if teacher is None:
            raise ConfigError(f"{type(self).__name__} needs a teacher, but none was given.")
        check_layers(student, self.student_layers, "kd.student_layers")
        check_layers(teacher, self.teacher_layers, "kd.teacher_layers")
        check_distinct(student, teacher)
        self.teacher = freeze_teacher(teacher)

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return (KDLoss(logits) + feature loss, student logits)."""
        teacher = self.teacher
        teacher.eval()  # in case someone called .train() on it since
        # no_grad, not inference_mode: losses such as F.mse_loss save the teacher's features for
        # backward, which inference tensors do not allow.
        with torch.no_grad(), capture_features(teacher, self.teacher_layers) as t_features:
            teacher_logits = teacher(x)
        with capture_features(model, self.student_layers) as s_features:
            logits = model(x)
        feature_loss = self.feature_loss(
            collect(s_features, self.student_layers, "student"),
            collect(t_features, self.teacher_layers, "teacher"),
        )
        return self.kd_loss(logits, teacher_logits, y) + feature_loss, logits

    def extra_parameters(self) -> list[nn.Parameter]:
        """Return the feature loss's learned parameters (none for attention transfer)."""
        return list(self.feature_loss.parameters())


class AttentionObjective(_FeatureObjective):
    """Attention transfer: KDLoss(T, alpha) on logits + AttentionTransferLoss(beta, p) on layers.

    loss = alpha * T^2 * KL + (1 - alpha) * CE + beta / 2 * sum_j mean (a_s^j - a_t^j)^2;
    alpha = 0 is the paper's AT (CE + AT), alpha > 0 its AT + KD combination.
    """

    def __init__(
        self,
        *,
        temperature: float,
        alpha: float,
        beta: float,
        p: float,
        student_layers: Sequence[str],
        teacher_layers: Sequence[str],
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_logits: Tensor | None = None,
        label_smoothing: float = 0.0,
        example_input: Tensor | None = None,
    ) -> None:
        super().__init__(
            temperature=temperature,
            alpha=alpha,
            student_layers=student_layers,
            teacher_layers=teacher_layers,
            student=student,
            teacher=teacher,
            label_smoothing=label_smoothing,
        )
        self.feature_loss = AttentionTransferLoss(beta=beta, p=p)


def _channels(model: nn.Module, paths: list[str], example_input: Tensor) -> list[int]:
    """Return the channel counts of the feature maps at `paths`, from one probe forward."""
    shapes = probe_feature_shapes(model, paths, example_input)
    for path, shape in zip(paths, shapes, strict=True):
        if len(shape) != 4:
            raise ConfigError(
                f"kd layer {path!r} outputs shape {tuple(shape)}, not an (N, C, H, W) feature map."
            )
    return [shape[1] for shape in shapes]


class FitNetObjective(_FeatureObjective):
    """FitNet hints: KDLoss(T, alpha) on logits + FitNetLoss(beta) through 1x1 conv adapters.

    loss = alpha * T^2 * KL + (1 - alpha) * CE + beta * sum_j MSE(r_j(f_s^j), f_t^j).
    The adapters are sized by one probe forward of student and teacher on `example_input` (in
    eval mode, no grad), created on the student's device, and returned by `extra_parameters()`.
    They fit the student as it is now: rebuild the objective after pruning changes its channels.
    """

    feature_loss: FitNetLoss

    def __init__(
        self,
        *,
        temperature: float,
        alpha: float,
        beta: float,
        student_layers: Sequence[str],
        teacher_layers: Sequence[str],
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_logits: Tensor | None = None,
        label_smoothing: float = 0.0,
        example_input: Tensor | None = None,
    ) -> None:
        super().__init__(
            temperature=temperature,
            alpha=alpha,
            student_layers=student_layers,
            teacher_layers=teacher_layers,
            student=student,
            teacher=teacher,
            label_smoothing=label_smoothing,
        )
        if example_input is None:
            raise ValueError(
                "FitNetObjective needs example_input, an input batch, to size adapters"
            )
        s_channels = _channels(student, self.student_layers, example_input)
        t_channels = _channels(self.teacher, self.teacher_layers, example_input)
        device = next(student.parameters()).device
        self.feature_loss = FitNetLoss(s_channels, t_channels, beta=beta).to(device)

    @property
    def adapters(self) -> nn.ModuleList:
        """The 1x1 conv adapters, one per layer pair."""
        return self.feature_loss.adapters
