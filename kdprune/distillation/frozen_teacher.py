"""The frozen teacher: freezing it and caching its logits over an in-memory training set."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    """Put `teacher` in eval mode with `requires_grad` off for every parameter; return it."""
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def check_distinct(student: nn.Module | None, teacher: nn.Module | None) -> None:
    """Raise `ValueError` if student and teacher are the same module or share a parameter."""
    if student is None or teacher is None:
        return
    if student is teacher:
        raise ValueError(
            "student and teacher are the same module object; deep-copy the teacher before "
            "pruning or training the student"
        )
    teacher_params = {id(p) for p in teacher.parameters()}
    if any(id(p) in teacher_params for p in student.parameters()):
        raise ValueError(
            "student and teacher share parameters; freezing the teacher would freeze the student. "
            "Deep-copy the teacher first"
        )


def frozen_teacher(student: nn.Module | None, teacher: nn.Module | None) -> nn.Module | None:
    """Check student and teacher are distinct; return the teacher frozen (None stays None)."""
    check_distinct(student, teacher)
    return None if teacher is None else freeze_teacher(teacher)


def _device_of(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return torch.device("cpu") if param is None else param.device


@torch.no_grad()
def compute_teacher_logits(
    teacher: nn.Module, inputs: Tensor | Dataset, *, batch_size: int = 256
) -> Tensor:
    """Return the teacher's float32 logits for every training sample: row i is sample i.

    `inputs` is the whole in-memory training set, either a tensor (N, ...) or a map-style
    `Dataset` whose items are `x` or tuples starting with `x`, read in index order. The teacher is
    frozen and run in eval mode on its own device, where the result stays. The cache is valid only
    when the training inputs are deterministic (no random augmentation): the objective then looks
    up `logits[idx]` instead of running the teacher on a batch it has already seen.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    freeze_teacher(teacher)
    device = _device_of(teacher)
    if isinstance(inputs, Tensor):
        batches = inputs.split(batch_size)
    else:
        batches = (
            batch[0] if isinstance(batch, (tuple, list)) else batch
            for batch in DataLoader(inputs, batch_size=batch_size, shuffle=False, num_workers=0)
        )
    outputs = [teacher(x.to(device)).float() for x in batches]
    if not outputs:
        raise ValueError("cannot cache teacher logits for an empty training set")
    return torch.cat(outputs)
