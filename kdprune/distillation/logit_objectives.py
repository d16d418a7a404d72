"""Logit objectives for the engine: plain cross-entropy and Hinton KD on the teacher's logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdprune.distillation.frozen_teacher import frozen_teacher
from kdprune.distillation.kd_checks import validate_kd_params
from kdprune.distillation.losses import KDLoss
from kdprune.engine.objective import Objective as Objective  # kdprune.distillation.Objective
from kdprune.errors import ConfigError


class CrossEntropyObjective:
    """Plain cross-entropy with optional label smoothing (`kd: none`); ignores any teacher."""

    needs_teacher = False

    def __init__(
        self,
        label_smoothing: float = 0.0,
        *,
        student: nn.Module | None = None,
        teacher: nn.Module | None = None,
        teacher_logits: Tensor | None = None,
        example_input: Tensor | None = None,
    ) -> None:
        validate_kd_params(label_smoothing=label_smoothing)
        self.label_smoothing = float(label_smoothing)

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return (CE(model(x), y), logits)."""
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing), logits

    def extra_parameters(self) -> list[nn.Parameter]:
        """Return no parameters: plain CE learns nothing besides the model."""
        return []


def _check_cache(teacher_logits: Tensor | None) -> Tensor | None:
    if teacher_logits is not None and teacher_logits.dim() != 2:
        raise ValueError(
            f"teacher_logits must be (num_samples, num_classes), got {tuple(teacher_logits.shape)}"
        )
    return teacher_logits


class HintonObjective:
    """Hinton KD on logits (see `KDLoss`), from a running teacher or from cached teacher logits."""

    needs_teacher = True

    def __init__(
        self,
        *,
        temperature: float,
        alpha: float,
        student: nn.Module | None = None,
        teacher: nn.Module | None = None,
        teacher_logits: Tensor | None = None,
        label_smoothing: float = 0.0,
        example_input: Tensor | None = None,
    ) -> None:
        self.kd_loss = KDLoss(temperature, alpha, label_smoothing)
        if teacher is None and teacher_logits is None and self.kd_loss.alpha > 0:
            raise ConfigError(
                f"kd.alpha={alpha} distills from a teacher, but no teacher or cached teacher "
                f"logits were given."
            )
        self.teacher = frozen_teacher(student, teacher)
        self.teacher_logits = _check_cache(teacher_logits)

    def _teacher_logits(self, x: Tensor, idx: Tensor | None, like: Tensor) -> Tensor | None:
        if self.kd_loss.alpha == 0.0:
            return None  # the loss is exactly CE; skip the teacher
        if self.teacher_logits is not None:
            if idx is None:
                raise ValueError("cached teacher logits need the batch's sample indices (idx)")
            return self.teacher_logits[idx.to(self.teacher_logits.device)].to(like.device)
        assert self.teacher is not None  # guaranteed by __init__
        self.teacher.eval()  # in case someone called .train() on it since
        with torch.no_grad():
            return self.teacher(x)

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return (alpha * T^2 * KL + (1 - alpha) * CE, student logits)."""
        logits = model(x)
        return self.kd_loss(logits, self._teacher_logits(x, idx, logits), y), logits

    def extra_parameters(self) -> list[nn.Parameter]:
        """Return no parameters: logit KD learns nothing besides the student."""
        return []
