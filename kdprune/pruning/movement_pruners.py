"""Movement pruning's two pruners: weights masked by their movement scores, or channels removed.

Both learn while the student trains (`regularize(model)` after each backward accumulates the
scores, see `kdprune.pruning.movement`), so they need training before they prune: the joint
order (sparsity on the cubic schedule) or distill_then_prune (scores from its distill stage).
Each says so through the `Pruner` contract: `training_hook()` accumulates the scores and
`carried()` hands them to the pruners the order builds later in the same run, so what was
learned carries over from one pruning step to the next.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from kdprune.errors import ConfigError
from kdprune.pruning.base import (
    ALLOCATIONS,
    MaskedPruner,
    PruneResult,
    check_choice,
    check_ratio,
    ignored_module_paths,
    require_weighted_layers,
    weighted_layers,
)
from kdprune.pruning.masks import clone_model
from kdprune.pruning.movement import MovementImportance, MovementScores
from kdprune.pruning.structured import StructuredPruner


def _nothing_learned(method: str) -> ConfigError:
    return ConfigError(
        f"{method} has no movement scores: it learns them while the student trains, so it "
        "prunes in schedule=joint or after distill_then_prune's distill stage."
    )


def lowest(scores: list[Tensor], alive: list[Tensor], count: int) -> list[Tensor]:
    """Masks that drop the `count` lowest scores among the alive entries of all the tensors."""
    pairs = list(zip(scores, alive, strict=True))
    ranked = torch.cat([torch.where(a.bool(), s, torch.inf).flatten() for s, a in pairs])
    keep = torch.cat([a.flatten() for a in alive]).clone()
    if count > 0:
        keep[torch.topk(ranked, count, largest=False).indices] = 0
    parts = keep.split([a.numel() for a in alive])
    return [part.view_as(a) for part, a in zip(parts, alive, strict=True)]


def _count(alive: list[Tensor], masked: float) -> int:
    """How many more of the alive entries to mask so that `masked` of all entries are."""
    total = sum(a.numel() for a in alive)
    return max(int(sum(int(a.sum()) for a in alive)) - round((1.0 - masked) * total), 0)


class MovementPruner(MaskedPruner):
    """Mask the conv and linear weights (but the classifier's and `ignored_layers`) whose
    movement scores are lowest, through `torch.nn.utils.prune` (masks attached, shapes kept).

    Like torch's methods, `ratio` is the fraction of the weights still unmasked that is masked
    now: `uniform` per layer, `global` in one ranking over all layers. Repeated applications
    compound, which is how the joint order reaches its target on the cubic schedule; counts
    are taken from the compounded fraction (kept with the scores), so each layer ends with
    exactly round(s · n) of its n weights masked, whatever the number of steps.
    """

    learns_while_training = True

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Tensor | None = None,
        *,
        ratio: float,
        regularizer: MovementScores,
        unit: str = "params",
        allocation: str = "uniform",
        ignored_layers: Iterable[str] = (),
        calibration: Any = None,
        loss_fn: Any = None,
    ) -> None:
        self.check_options(ratio=ratio, unit=unit, allocation=allocation)
        self.model, self.ratio, self.regularizer = model, float(ratio), regularizer
        self.global_pruning = allocation == "global"
        self.ignored = ignored_module_paths(model, ignored_layers)
        require_weighted_layers(model, self.ignored)

    @staticmethod
    def check_options(
        ratio: Any = None, unit: Any = "params", allocation: Any = "uniform", **_: Any
    ) -> None:
        """Raise ConfigError if an option is out of range (no model needed)."""
        check_ratio(ratio)
        check_choice(unit, ("params",), "unit (movement masks single weights)")
        check_choice(allocation, ALLOCATIONS, "allocation")

    def regularize(self, model: nn.Module) -> None:
        """Accumulate the movement scores of `model` (after backward)."""
        self.regularizer.regularize(model)

    def training_hook(self) -> Callable[[nn.Module], None]:
        """`regularize`: the scores are learned while the student trains."""
        return self.regularize

    def carried(self) -> dict[str, Any]:
        """The scores, shared with the pruners of later steps."""
        return {"regularizer": self.regularizer}

    def apply(self) -> PruneResult:
        """Mask the lowest-scoring `ratio` of the remaining weights; nothing to replay."""
        start = time.perf_counter()
        if self.regularizer.empty:
            raise _nothing_learned("movement pruning")
        targets = self._targets()
        alive = [getattr(m, "weight_mask", torch.ones_like(m.weight)) for _, m in targets]
        scores = [self._score(path, m) for path, m in targets]
        masked = 1.0 - (1.0 - self.regularizer.masked_fraction) * (1.0 - self.ratio)
        if self.global_pruning:
            masks = lowest(scores, alive, _count(alive, masked))
        else:
            pairs = zip(scores, alive, strict=True)
            masks = [lowest([s], [a], _count([a], masked))[0] for s, a in pairs]
        for (_, module), mask in zip(targets, masks, strict=True):
            prune.custom_from_mask(module, "weight", mask)
        self.regularizer.masked_fraction = masked
        return PruneResult(None, None, time.perf_counter() - start)

    def _score(self, path: str, module: nn.modules.conv._ConvNd | nn.Linear) -> Tensor:
        score = self.regularizer.scores.get(f"{path}.weight")
        return torch.zeros_like(module.weight) if score is None else score.to(module.weight)

    def _targets(self) -> list[tuple[str, nn.modules.conv._ConvNd | nn.Linear]]:
        return weighted_layers(self.model, self.ignored)


class ChannelMovementPruner(StructuredPruner):
    """Remove whole channels, the lowest block movement first (`MovementImportance` in
    Torch-Pruning): the CNN counterpart of block movement pruning, with a real speed-up.

    Every option of `StructuredPruner` but the importance, which the scores give; allocation
    is uniform only, so the joint order's one-shot widths (`plan()`, taken before any score is
    learned) do not depend on the scores. After each cut the scores are pruned alike.
    """

    learns_while_training = True

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Tensor,
        *,
        regularizer: MovementScores,
        calibration: Any = None,
        **options: Any,
    ) -> None:
        self.check_options(**options)
        super().__init__(
            model,
            example_inputs,
            importance=MovementImportance(),
            calibrate=regularizer,  # puts the scores into `.grad` of the copy being pruned
            regularizer=regularizer,
            calibration=() if calibration is None else calibration,
            **options,
        )

    @staticmethod
    def check_options(
        ratio: Any = None,
        unit: Any = "channels",
        allocation: Any = "uniform",
        *args: Any,
        **options: Any,
    ) -> None:
        """StructuredPruner's checks, and uniform allocation (widths independent of scores)."""
        check_choice(allocation, ("uniform",), "allocation (channel movement)")
        StructuredPruner.check_options(ratio, unit, allocation, *args, **options)

    def apply(self) -> PruneResult:
        """Prune to the configured target by block movement; the scores follow."""
        if self.regularizer.empty:
            raise _nothing_learned("channel movement pruning")
        return self._following(super().apply)

    def apply_widths(self, widths: dict[str, int]) -> PruneResult:
        """Prune to `widths` by block movement (joint's pruning steps); the scores follow."""
        if self.regularizer.empty:
            raise _nothing_learned("channel movement pruning")
        return self._following(lambda: StructuredPruner.apply_widths(self, widths))

    def _following(self, prune_model: Callable[[], PruneResult]) -> PruneResult:
        before = clone_model(self.model)
        result = prune_model()
        self.regularizer.follow(before, self.example_inputs, result.history or [])
        return result
