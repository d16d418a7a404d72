"""What the engine trains with: the objective protocol that every KD objective implements.

Declared here, beside the loop that calls it, so that the engine needs nothing from
`kdprune.distillation` (which implements it) and the protocol is defined once.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class Objective(Protocol):
    """What the engine trains with: returns the scalar loss and the student's logits.

    The class attribute `needs_teacher` says whether it uses the teacher (a run without one
    skips the teacher's logits)."""

    needs_teacher: ClassVar[bool]

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, idx: Tensor | None
    ) -> tuple[Tensor, Tensor]: ...

    def extra_parameters(self) -> list[nn.Parameter]: ...
