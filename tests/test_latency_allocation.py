"""`allocation: latency`: per-group latency tables, the knapsack over them, and the cut.

No test here reads a clock that runs: latency is a function of the architecture (a fixed cost
plus a cost per MAC, the first convolution's MACs dearer than the others', as a layer at full
resolution with few channels runs slowly on a CPU), so every search is deterministic and the
same on every machine.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest
import torch
import torch_pruning as tp
from torch import nn

from kdprune.errors import ConfigError
from kdprune.metrics.latency_target import LatencyTarget
from kdprune.models import lenet5
from kdprune.models.counting import count
from kdprune.pruning import memo
from kdprune.pruning.calibration import GradientCalibration
from kdprune.pruning.graph import layer_widths
from kdprune.pruning.latency_allocation import allocate
from kdprune.pruning.latency_table import ChannelGroup, channel_groups, width_grid
from kdprune.pruning.masks import clone_model
from kdprune.pruning.structured import StructuredPruner
from kdprune.pruning.structured_options import check_structured_options

X = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))


@dataclass(frozen=True)
class LayerLatency(LatencyTarget):
    """A latency of the architecture alone: `fixed_ms`, plus per million MACs per sample
    `ms_per_mmac` (`first_layer` times that in the first convolution), times the batch. Every
    model it times is logged (no clock)."""

    fixed_ms: float = 1.0
    ms_per_mmac: float = 1.0
    first_layer: float = 4.0
    timed: list[str] = field(default_factory=list, repr=False, compare=False)

    def ms(self, model: nn.Module) -> float:
        head = count(model.layer1, X, "macs")
        rest = count(model, X, "macs") - head
        mmacs = (self.first_layer * head + rest) / 1e6
        return self.fixed_ms + self.ms_per_mmac * self.batch_size * mmacs

    def times_ms(
        self, models: Mapping[str, nn.Module], input_shape: Sequence[int], clock=None
    ) -> dict[str, float]:
        self.timed.extend(models)
        return {name: self.ms(model) for name, model in models.items()}


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test searches from an empty memo of reductions."""
    monkeypatch.setattr(memo, "REDUCTIONS", memo.Reductions())
    monkeypatch.setattr("kdprune.pruning.structured.REDUCTIONS", memo.REDUCTIONS)
    monkeypatch.setattr("kdprune.pruning.latency_allocation.REDUCTIONS", memo.REDUCTIONS)


def _model(seed: int = 0, bn: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    model = lenet5(num_classes=10, in_channels=1, image_size=28, widths=[16, 32], hidden=[120, 84])
    if bn:  # BN-scale importance needs BatchNorm after the convolutions
        model.layer1.insert(1, nn.BatchNorm2d(16))
        model.layer2.insert(1, nn.BatchNorm2d(32))
    return model


def _pruner(model, target, ratio=0.5, allocation="latency", **options) -> StructuredPruner:
    options = {"round_to": None, "importance": tp.importance.MagnitudeImportance()} | options
    return StructuredPruner(
        model, X, ratio=ratio, unit="latency", allocation=allocation, latency=target, **options
    )


def test_the_width_grid_keeps_the_cap_and_the_rounding() -> None:
    assert width_grid(64, 0.9, 16) == (48, 32, 16)
    assert width_grid(16, 0.9, 16) == ()  # a group narrower than two blocks is never cut
    assert width_grid(120, 0.5, 8) == tuple(range(112, 59, -8))  # none below half
    unrounded = width_grid(32, 0.9, None)
    assert unrounded == tuple(sorted(set(unrounded), reverse=True)) and 3 <= min(unrounded) < 32


def test_the_knapsack_cuts_where_latency_is_cheapest_in_importance() -> None:
    a, b = ChannelGroup("a", ("a",), 4), ChannelGroup("b", ("b",), 4)
    grids = {a: (2,), b: (2,)}
    savings = {"a": {2: 0.30}, "b": {2: 0.30}}
    scores = {"a": torch.tensor([1.0, 1.0, 1.0, 1.0]), "b": torch.tensor([0.1, 0.1, 5.0, 5.0])}
    assert allocate(grids, savings, scores, 0.25) == {"a": 4, "b": 2}  # b's channels cost less
    assert allocate(grids, savings, scores, 0.5) == {"a": 2, "b": 2}  # the need takes both
    assert allocate(grids, savings, scores, 0.9) == {"a": 2, "b": 2}  # beyond: the narrowest
    dear = {"a": {2: 0.30}, "b": {2: 0.01}}  # b saves almost nothing: a goes instead
    assert allocate(grids, dear, scores, 0.25) == {"a": 2, "b": 4}


def test_a_table_is_measured_once_and_read_back(tmp_path) -> None:
    target = LayerLatency(batch_size=4)
    model = _model()
    pruner = _pruner(model, target, latency_tables=tmp_path)
    pruner.plan()
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and pruner.allocated["table_measured"] > 0
    saved = json.loads(files[0].read_text())["savings"]
    assert set(saved) == {g.root for g, _ in channel_groups(model, X, pruner.ignored)}

    memo.REDUCTIONS.clear()  # a new run: nothing remembered but the table's file
    again = _pruner(_model(seed=1), target, latency_tables=tmp_path)  # other weights
    timed = len(target.timed)
    assert again.plan() == pruner.plan()
    assert again.allocated["table_measured"] == 0
    assert not [name for name in target.timed[timed:] if name not in ("dense", "cut")]


def test_a_table_that_does_not_read_is_measured_again(tmp_path, caplog) -> None:
    target = LayerLatency(batch_size=4)
    _pruner(_model(), target, latency_tables=tmp_path).plan()
    (path,) = tmp_path.glob("*.json")
    path.write_text('{"format": 1, "savings": ')  # a half-written file
    memo.REDUCTIONS.clear()
    pruner = _pruner(_model(), target, latency_tables=tmp_path)
    pruner.plan()
    assert pruner.allocated["table_measured"] > 0 and "does not read" in caplog.text
    assert json.loads(path.read_text())["format"] == 1


def test_another_target_or_architecture_has_its_own_table(tmp_path) -> None:
    _pruner(_model(), LayerLatency(batch_size=4), latency_tables=tmp_path).plan()
    _pruner(_model(), LayerLatency(batch_size=4, threads=2), latency_tables=tmp_path).plan()
    narrow = lenet5(num_classes=10, in_channels=1, image_size=28, widths=[8, 32], hidden=[120, 84])
    _pruner(narrow, LayerLatency(batch_size=4), latency_tables=tmp_path, ratio=0.3).plan()
    assert len(list(tmp_path.glob("*.json"))) == 3


def test_the_latency_cut_keeps_more_of_the_network_at_the_same_latency() -> None:
    target = LayerLatency(batch_size=4)
    dense = _model()
    cuts = {}
    for allocation in ("uniform", "latency"):
        cuts[allocation] = clone_model(dense)
        pruner = _pruner(cuts[allocation], target, allocation=allocation)
        pruner.apply()
        achieved = 1 - target.ms(cuts[allocation]) / target.ms(dense)
        assert achieved == pytest.approx(0.5, abs=pruner.tolerance)
    kept = {name: sum(layer_widths(cut).values()) for name, cut in cuts.items()}
    assert kept["latency"] > kept["uniform"]
    # It takes channels from the dear first layer, not the same fraction everywhere.
    widths = {name: layer_widths(cut) for name, cut in cuts.items()}
    assert widths["latency"]["fc1"] > widths["uniform"]["fc1"]
    assert widths["latency"]["layer1.0"] / 16 < widths["latency"]["fc1"] / 120


@pytest.mark.parametrize(
    "importance",
    [
        tp.importance.MagnitudeImportance(p=1),
        tp.importance.FPGMImportance(),
        tp.importance.TaylorImportance(),
        tp.importance.BNScaleImportance(),
        tp.importance.RandomImportance(),
    ],
    ids=["l1", "fpgm", "taylor", "bn_scale", "random"],
)
def test_every_structured_importance_reaches_the_target_on_the_grid(importance) -> None:
    target = LayerLatency(batch_size=4)
    dense = _model(bn=isinstance(importance, tp.importance.BNScaleImportance))
    options = {}
    if isinstance(importance, tp.importance.TaylorImportance):
        batches = [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))]
        options = {"calibrate": GradientCalibration(1), "calibration": batches}
    cut = clone_model(dense)
    pruner = _pruner(cut, target, ratio=0.4, importance=importance, round_to=4, **options)
    pruner.apply()
    assert 1 - target.ms(cut) / target.ms(dense) == pytest.approx(0.4, abs=pruner.tolerance)
    before, after = layer_widths(dense), layer_widths(cut)
    assert all(after[p] % 4 == 0 for p in after if after[p] != before[p])


def test_the_joint_order_moves_toward_the_latency_cut() -> None:
    target = LayerLatency(batch_size=4)
    model = _model()
    pruner = _pruner(model, target)
    pruner.begin_gradual()
    final = pruner.plan()
    rebuild = lambda **o: StructuredPruner(model, X, importance=pruner.importance, **o)  # noqa: E731
    half = pruner.step_toward(0.0, 0.25, 0.5, rebuild)
    assert half is not None
    now, dense = layer_widths(model), layer_widths(_model())
    for path in final:
        assert final[path] <= now[path] <= dense[path]
    assert now != dense and now != final


def test_latency_allocation_needs_a_latency_unit_and_no_layer_ratios() -> None:
    with pytest.raises(ConfigError, match="allocation latency .* needs unit latency, not macs"):
        check_structured_options(ratio=0.5, unit="macs", allocation="latency")
    with pytest.raises(ConfigError, match="layer_ratios"):
        check_structured_options(
            ratio=0.5, unit="latency", allocation="latency", layer_ratios={"fc1": 0.5}
        )
    check_structured_options(ratio=0.5, unit="latency", allocation="latency")


def test_a_wide_group_gets_at_most_grid_points_widths_across_its_range() -> None:
    grid = width_grid(960, 0.9, 16)  # 54 multiples of 16 from 96 to 944
    assert len(grid) == 16 and grid[0] == 944 and grid[-1] == 96
    assert all(w % 16 == 0 for w in grid) and list(grid) == sorted(grid, reverse=True)
