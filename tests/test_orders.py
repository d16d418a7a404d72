"""The joint order's pieces: the cubic sparsity schedule, and training on after channels go."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch_pruning as tp

from kdprune.data import Augment, digits, make_loaders
from kdprune.distillation import CrossEntropyObjective
from kdprune.engine import Stage, fit, seed_everything
from kdprune.engine.lr_schedules import constant
from kdprune.models import lenet5
from kdprune.pruning import StructuredPruner
from kdprune.schedules import cubic_sparsity

CPU = torch.device("cpu")


def test_cubic_schedule_rises_from_zero_to_target() -> None:
    values = [cubic_sparsity(t, 10, 110, 0.8) for t in range(0, 130, 10)]
    assert values[0] == values[1] == 0.0 and values[-1] == values[-2] == pytest.approx(0.8)
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    # Zhu & Gupta prune fast early and slowly late: the first half reaches 7/8 of the target.
    assert cubic_sparsity(60, 10, 110, 0.8) == pytest.approx(0.8 * (1 - 0.5**3))


def test_every_parameter_still_updates_after_a_joint_prune_step() -> None:
    seed_everything(0)
    loaders = make_loaders(digits(), 64, 512, CPU, Augment(), seed=0)
    model = lenet5(10, 1, 8)
    example = torch.randn(1, 1, 8, 8)
    after_prune: dict[str, torch.Tensor] = {}

    def prune_at_step_5(m: torch.nn.Module, step: int) -> bool:
        if step != 5:
            return False
        StructuredPruner(
            m, example, importance=tp.importance.GroupMagnitudeImportance(p=1), ratio=0.5
        ).apply()
        after_prune.update({n: p.detach().clone() for n, p in m.named_parameters()})
        return True

    stage = Stage(
        "joint",
        1,
        CrossEntropyObjective(),
        partial(torch.optim.SGD, lr=0.05, momentum=0.9),
        constant(),
        CPU,
        progress=False,
        step_hooks=[prune_at_step_5],
        select_on_val=False,
    )
    fit(model, loaders.train, loaders.val, stage)
    assert after_prune, "the hook never pruned"
    assert model.layer1[0].out_channels == 3  # channels really went
    for name, param in model.named_parameters():
        assert param.shape == after_prune[name].shape
        assert not torch.equal(param.detach(), after_prune[name]), f"{name} stopped training"
