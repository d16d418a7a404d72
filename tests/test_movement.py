"""Movement pruning: scores follow S = −Σ g·w, masks and channels go by them, joint hits its target.

Scores are checked by hand on a two-weight layer; the pruners on lenet5 with scores set by the
test; the orders end to end on digits.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from helpers.compose import compose_cfg
from torch import nn

from kdprune.app import run
from kdprune.config_checks import validate
from kdprune.errors import ConfigError
from kdprune.models import lenet5
from kdprune.pruning import (
    ChannelMovementPruner,
    MovementImportance,
    MovementPruner,
    MovementScores,
    load_model,
)
from kdprune.pruning.structured import layer_widths

FAST = [
    "teacher.epochs=2",
    "budget.student_epochs=2",
    "budget.finetune_epochs=1",
    "trainer.max_batches=3",
]
EXAMPLE = torch.randn(1, 1, 8, 8)


def test_scores_accumulate_minus_gradient_times_weight() -> None:
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, -1.0]]))
    scores, x = MovementScores(), torch.tensor([[1.0, 1.0]])
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        layer(x).sum().backward()  # dL/dw = x = [1, 1] at every step
        scores.regularize(layer)
        optimizer.step()
    # w: [2, -1] -> [1.5, -1.5]; S = -(1*2 + 1*1.5), -(1*(-1) + 1*(-1.5))
    assert torch.allclose(scores.scores["weight"], torch.tensor([[-3.5, 2.5]]))
    # The first weight shrank towards zero (negative score), the second grew (positive): movement
    # ranks them the other way round from magnitude, which keeps the first (|2| > |-1|).
    assert scores.steps == 2 and not scores.empty


def _scored(model: nn.Module, score) -> MovementScores:
    scores = MovementScores()
    scores.scores = {n: score(n, p).detach().clone() for n, p in model.named_parameters()}
    scores.steps = 1
    return scores


def test_movement_masks_the_lowest_scores_not_the_smallest_weights() -> None:
    torch.manual_seed(0)
    model = lenet5(10, 1, 8)
    scores = _scored(model, lambda _, p: -p.abs())  # the largest weights moved most to zero
    before = {n: m.weight.detach().clone() for n, m in model.named_children() if n.startswith("fc")}
    before |= {n: model.get_submodule(n).weight.detach().clone() for n in ("layer1.0", "layer2.0")}
    MovementPruner(model, EXAMPLE, ratio=0.5, regularizer=scores).apply()
    for name in ("layer1.0", "layer2.0", "fc1", "fc2"):
        module, weight = model.get_submodule(name), before[name]
        kept = module.weight_mask.bool()
        assert int((~kept).sum()) == round(0.5 * weight.numel())
        assert weight[kept].abs().max() <= weight[~kept].abs().min()  # the small ones stay
    assert not hasattr(model.fc3, "weight_mask")  # the classifier is left dense


def test_repeated_movement_masking_lands_exactly_on_the_compounded_target() -> None:
    torch.manual_seed(0)
    model = lenet5(10, 1, 8)
    scores = _scored(model, lambda _, p: torch.randn_like(p))
    for ratio in (0.5, 0.2, 0.5):  # 1 - 0.5 * 0.8 * 0.5 = 0.8 of the weights
        MovementPruner(model, EXAMPLE, ratio=ratio, regularizer=scores).apply()
    for name in ("layer1.0", "layer2.0", "fc1", "fc2"):
        mask = model.get_submodule(name).weight_mask
        assert int((mask == 0).sum()) == round(0.8 * mask.numel()), name


def test_movement_refuses_to_prune_before_any_training() -> None:
    with pytest.raises(ConfigError, match="learns them while the student trains"):
        MovementPruner(lenet5(10, 1, 8), EXAMPLE, ratio=0.5, regularizer=MovementScores()).apply()


def test_channel_importance_sums_the_scores_of_everything_removed_with_a_channel() -> None:
    model = lenet5(10, 1, 8)  # conv 1->6 (5x5) -> conv 6->16 (5x5)
    scores = _scored(model, lambda _, p: torch.ones_like(p))
    scores(model)  # into .grad, where the importance reads them
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=EXAMPLE)
    group = graph.get_pruning_group(model.layer1[0], tp.prune_conv_out_channels, list(range(6)))
    # per channel: its filter (25) + bias (1) + the next conv's 16 filters' input slice (16 * 25)
    assert torch.equal(MovementImportance()(group), torch.full((6,), 426.0))


def test_channel_movement_removes_the_lowest_scoring_channels_and_scores_follow() -> None:
    torch.manual_seed(0)
    model = lenet5(10, 1, 8)

    def score(name: str, p: torch.Tensor) -> torch.Tensor:
        s = torch.ones_like(p)
        if name == "layer1.0.weight":
            s[[1, 4]] = -10.0  # channels 1 and 4 shrank during training
        return s

    scores = _scored(model, score)
    kept = model.layer1[0].weight.detach()[[0, 2, 3, 5]].clone()
    pruner = ChannelMovementPruner(
        model, EXAMPLE, regularizer=scores, ratio=1 / 3, ignored_layers=["layer2", "fc1", "fc2"]
    )
    result = pruner.apply()
    assert model.layer1[0].out_channels == 4 and result.history  # really removed
    assert torch.equal(model.layer1[0].weight.detach(), kept)
    assert scores.scores["layer1.0.weight"].shape == model.layer1[0].weight.shape
    assert scores.scores["layer2.0.weight"].shape == model.layer2[0].weight.shape
    assert bool((scores.scores["layer1.0.weight"] == 1).all())  # the -10 rows went with them
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    scores.regularize(model)  # the pruned model still fits its scores


def test_joint_movement_reaches_exactly_the_target_sparsity(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(*FAST, "schedule=joint", "prune_method=movement", "prune_method.ratio=0.8")
    metrics = run(cfg, tmp_path / "run")
    model = load_model(metrics["model_file"])
    assert metrics["kind"] == "masked"
    for name in ("layer1.0", "layer2.0", "fc1", "fc2"):
        weight = model.get_submodule(name).weight
        assert int((weight == 0).sum()) == round(0.8 * weight.numel()), name


def test_joint_channel_movement_reaches_the_one_shot_widths(make_cfg, tmp_path: Path) -> None:
    cut = [*FAST, "prune_method.unit=macs", "prune_method.ratio=0.5", "student_init=teacher"]
    l1 = run(make_cfg(*cut, "schedule=distill_then_prune"), tmp_path / "l1")
    joint = run(make_cfg(*cut, "schedule=joint", "prune_method=channel_movement"), tmp_path / "mv")
    widths = layer_widths(load_model(joint["model_file"]))
    assert joint["kind"] == "structured"
    assert widths == layer_widths(load_model(l1["model_file"]))  # uniform: the same widths
    assert widths["layer1.0"] < 6 and widths["layer2.0"] < 16  # channels really removed
    assert joint["macs_after"] == l1["macs_after"] and joint["macs_speedup"] > 1.5


def test_distill_then_prune_learns_the_scores_in_its_distill_stage(make_cfg, tmp_path) -> None:
    metrics = run(make_cfg(*FAST, "prune_method=channel_movement"), tmp_path / "run")
    assert metrics["channel_ratio"] == pytest.approx(0.5, abs=0.1)


@pytest.mark.parametrize("method", ["movement", "channel_movement"])
def test_movement_refuses_orders_that_prune_before_training(make_cfg, tmp_path, method) -> None:
    with pytest.raises(ConfigError, match="learns its scores"):
        run(make_cfg(*FAST, f"prune_method={method}", "schedule=prune_then_distill",
                     "student_init=teacher"), tmp_path / "ptd")  # fmt: skip
    with pytest.raises(ConfigError, match="distill stage"):
        run(make_cfg(f"prune_method={method}", "budget.finetune_epochs=8"), tmp_path / "dtp")
    assert not list(tmp_path.rglob("metrics.json"))


@pytest.mark.parametrize("method", ["movement", "l1_unstructured", "channel_movement", "l1"])
@pytest.mark.parametrize("ratio", [0.5, 0.9])
def test_every_run_of_the_movement_sweep_passes_the_checks(method: str, ratio: float) -> None:
    cfg = compose_cfg("+sweep=movement", f"prune_method={method}", f"prune_method.ratio={ratio}")
    assert cfg.schedule.name == "joint" and cfg.student_init == "teacher"
    validate(cfg)  # raises ConfigError (one line) for a run that could not start
