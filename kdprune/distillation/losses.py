"""Distillation losses: each one an `nn.Module` whose docstring states its formula."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdprune.distillation.kd_checks import validate_kd_params
from kdprune.errors import ConfigError


def _validate_weight(name: str, value: float) -> None:
    if not float(value) >= 0:
        raise ConfigError(f"kd.{name} must be >= 0, got {value}.")


class KDLoss(nn.Module):
    """Hinton knowledge distillation loss on logits.

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

    with s the student logits, t the teacher logits, T the temperature, KL averaged over the batch
    (reduction "batchmean", computed from log-softmaxes for stability) and CE the cross-entropy with
    optional label smoothing. The T^2 factor is kept at every alpha, so alpha = 0 is exactly CE,
    alpha = 1 is exactly T^2 * KL, and the loss is continuous in alpha across the whole range.
    """

    def __init__(self, temperature: float, alpha: float, label_smoothing: float = 0.0) -> None:
        super().__init__()
        validate_kd_params(temperature, alpha, label_smoothing)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.label_smoothing = float(label_smoothing)

    def distillation_term(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """Return T^2 * KL(softmax(t / T) || softmax(s / T)), averaged over the batch."""
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f"student logits {tuple(student_logits.shape)} and teacher logits "
                f"{tuple(teacher_logits.shape)} differ in shape; do they predict the same classes?"
            )
        t = self.temperature
        # float(): under autocast the logits may be half precision; the KL of soft targets is not.
        log_p_student = F.log_softmax(student_logits.float() / t, dim=1)
        log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
        kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
        return kl * (t * t)

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor | None, targets: Tensor
    ) -> Tensor:
        """Return the alpha-weighted sum of the distillation term and the cross-entropy."""
        ce = F.cross_entropy(student_logits, targets, label_smoothing=self.label_smoothing)
        if self.alpha == 0.0:
            # Exactly CE; the teacher's logits are not needed (callers may skip the teacher).
            return ce
        if teacher_logits is None:
            raise ValueError(f"KDLoss with alpha={self.alpha} needs teacher logits, got None")
        kd = self.distillation_term(student_logits, teacher_logits)
        return self.alpha * kd + (1.0 - self.alpha) * ce

    def extra_repr(self) -> str:
        """Show the hyperparameters in `print(module)`."""
        return (
            f"temperature={self.temperature}, alpha={self.alpha}, "
            f"label_smoothing={self.label_smoothing}"
        )


def _resize_like(x: Tensor, target: Tensor, mode: str = "bilinear") -> Tensor:
    """Resize the spatial dims of `x` (N, C, H, W) to those of `target` if they differ."""
    if x.shape[-2:] == target.shape[-2:]:
        return x
    return F.interpolate(x, size=target.shape[-2:], mode=mode, align_corners=False)


def _check_pairs(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> None:
    if len(student) != len(teacher) or not student:
        raise ValueError(
            f"need the same, non-zero number of student and teacher feature maps, "
            f"got {len(student)} and {len(teacher)}"
        )
    for f_s, f_t in zip(student, teacher, strict=True):
        if f_s.dim() != 4 or f_t.dim() != 4 or f_s.shape[0] != f_t.shape[0]:
            raise ValueError(
                f"feature maps must be (N, C, H, W) with the same N, got student "
                f"{tuple(f_s.shape)} and teacher {tuple(f_t.shape)}"
            )


class AttentionTransferLoss(nn.Module):
    """Attention transfer (Zagoruyko & Komodakis, 2017) between pairs of feature maps.

    For a feature map f of shape (N, C, H, W) the attention map is
        a(f) = q / ||q||_2,   q = vec(mean_c |f_c|^p)  (a vector of H*W values per sample),
    and the loss is
        L_AT = beta / 2 * sum_j mean_{n, k} (a(f_s^j) - a(f_t^j))^2
    summed over layer pairs j and averaged over the batch n and the H*W positions k. This is the
    authors' implementation (github.com/szagoruyko/attention-transfer, utils.py), for which the
    paper's beta = 1000 is tuned; the paper's Eq. 2 writes a non-squared norm instead.
    When the spatial sizes differ, the student's map q is resized to the teacher's H x W by
    bilinear interpolation before normalisation. Channel counts may differ.
    """

    def __init__(self, beta: float = 1000.0, p: float = 2.0) -> None:
        super().__init__()
        _validate_weight("beta", beta)
        if not float(p) > 0:
            raise ConfigError(f"kd.p must be > 0, got {p}.")
        self.beta = float(beta)
        self.p = float(p)

    def _map(self, f: Tensor, like: Tensor | None = None) -> Tensor:
        q = f.float().abs().pow(self.p).mean(dim=1, keepdim=True)
        if like is not None:
            q = _resize_like(q, like)
        return F.normalize(q.flatten(1), dim=1)

    def forward(
        self, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]
    ) -> Tensor:
        """Return beta/2 times the summed per-pair mean squared attention-map difference."""
        _check_pairs(student_features, teacher_features)
        total = student_features[0].new_zeros((), dtype=torch.float32)
        for f_s, f_t in zip(student_features, teacher_features, strict=True):
            a_t = self._map(f_t)
            a_s = self._map(f_s, like=f_t)
            total = total + (a_s - a_t).pow(2).mean()
        return self.beta / 2.0 * total

    def extra_repr(self) -> str:
        """Show the hyperparameters in `print(module)`."""
        return f"beta={self.beta}, p={self.p}"


class FitNetLoss(nn.Module):
    """FitNet hint loss (Romero et al., 2015) through learned 1x1 convolution adapters.

        L_hint = beta * sum_j mean_{n, c, h, w} (r_j(f_s^j) - f_t^j)^2

    where r_j is a 1x1 convolution (with bias) from the student's channels to the teacher's at
    layer pair j, and the mean is over all elements (MSE). If the spatial sizes differ, r_j(f_s^j)
    is resized to the teacher's H x W by bilinear interpolation. The adapters are trained together
    with the student (single-stage, as in the CRD benchmark), not in a separate hint stage.
    """

    def __init__(
        self,
        student_channels: Sequence[int],
        teacher_channels: Sequence[int],
        beta: float = 100.0,
    ) -> None:
        super().__init__()
        _validate_weight("beta", beta)
        if len(student_channels) != len(teacher_channels) or not student_channels:
            raise ValueError(
                f"need the same, non-zero number of student and teacher channel counts, "
                f"got {list(student_channels)} and {list(teacher_channels)}"
            )
        self.beta = float(beta)
        self.adapters = nn.ModuleList(
            nn.Conv2d(int(c_s), int(c_t), kernel_size=1)
            for c_s, c_t in zip(student_channels, teacher_channels, strict=True)
        )

    def forward(
        self, student_features: Sequence[Tensor], teacher_features: Sequence[Tensor]
    ) -> Tensor:
        """Return beta times the summed MSE between adapted student and teacher features."""
        _check_pairs(student_features, teacher_features)
        if len(student_features) != len(self.adapters):
            raise ValueError(
                f"FitNetLoss has {len(self.adapters)} adapters but got "
                f"{len(student_features)} feature pairs"
            )
        total = student_features[0].new_zeros((), dtype=torch.float32)
        for j, (adapter, f_s, f_t) in enumerate(
            zip(self.adapters, student_features, teacher_features, strict=True)
        ):
            if f_s.shape[1] != adapter.in_channels or f_t.shape[1] != adapter.out_channels:
                raise RuntimeError(
                    f"FitNet adapter {j} maps {adapter.in_channels} -> {adapter.out_channels} "
                    f"channels but the features have {f_s.shape[1]} (student) and {f_t.shape[1]} "
                    f"(teacher); rebuild the objective after pruning changes the student"
                )
            hint = _resize_like(adapter(f_s), f_t)
            total = total + F.mse_loss(hint.float(), f_t.float())
        return self.beta * total

    def extra_repr(self) -> str:
        """Show the hyperparameters in `print(module)`."""
        return f"beta={self.beta}"
