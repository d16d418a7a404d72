"""`kdprune sensitivity` and per-layer ratio files: groups not layers, the three files, and a
run with the file that reaches the uniform cut's MACs.

On digits: the dense model file of a tiny run (trained weights), a coarse grid and one
validation batch per score, so the analysis takes seconds.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers.compose import compose_cfg, run_args

from kdprune import commands
from kdprune.app import run
from kdprune.config_checks import validate
from kdprune.errors import ConfigError
from kdprune.models import classifier_path, lenet5, resnet20
from kdprune.pruning import StructuredPruner, load_model, read_layer_ratios
from kdprune.pruning.structured import layer_widths
from kdprune.sensitivity import COLUMNS, PrunableGroup, allocate, prunable_groups

FAST = [
    "teacher.epochs=2",
    "budget.student_epochs=2",
    "budget.finetune_epochs=1",
    "trainer.max_batches=3",
]
GRID = ["--ratios", "0.25,0.5,0.75", "--val-batches", "1"]


def test_a_residual_coupled_group_is_one_group() -> None:
    model = resnet20(10, 1, 8)
    groups = prunable_groups(model, torch.randn(1, 1, 8, 8), [classifier_path(model)])
    outs = [layer for g in groups for layer in g.out_layers]
    assert len(outs) == len(set(outs))  # every layer in one group only
    # the stem and every block's second conv of the first stage share their channels: one
    # group, as are those of the two later stages (with their downsampling convs)
    (stem,) = [g for g in groups if "conv1" in g.out_layers]
    assert set(stem.out_layers) == {"conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"}
    assert stem.layers.count("(out)") == 4 and "layer1.0.conv1 (in)" in stem.layers
    assert len(groups) == 3 + 9  # 3 residual groups, 9 inner convs alone
    assert all(g.name in g.out_layers for g in groups)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> tuple[Path, Path]:
    """A trained dense lenet5 (a tiny run's dense.pt) and `kdprune sensitivity`'s output."""
    tmp = tmp_path_factory.mktemp("sensitivity")
    paths = [f"paths.cache_dir={tmp}/cache", f"paths.data_dir={tmp}/data"]
    metrics = run(compose_cfg(*FAST, *paths), tmp / "run")
    path = Path(metrics["model_file"]).with_name("dense.pt")
    args = ["sensitivity", str(path), *run_args(tmp, "prune_method.ratio=0.5"), *GRID]
    assert commands.main([*args, "--out", str(tmp / "out")]) == 0
    return tmp, tmp / "out"


def test_sensitivity_writes_the_csv_the_plot_and_a_ratio_file(analysed) -> None:
    _, out = analysed
    table = pd.read_csv(out / "sensitivity.csv")
    assert list(table.columns) == COLUMNS
    assert list(table.columns[:5]) == ["group", "layers", "ratio", "val_acc", "val_loss"]
    assert set(table["group"]) == {"layer1.0", "layer2.0", "fc1", "fc2"}  # not the classifier
    assert sorted(set(table["ratio"])) == [0.0, 0.25, 0.5, 0.75] and len(table) == 16
    layers = table.loc[table["group"] == "layer1.0", "layers"].iloc[0]
    assert layers == "layer1.0 (out), layer2.0 (in)"
    kept = table[(table["group"] == "layer2.0") & (table["ratio"] == 0.5)]["channels_kept"]
    assert kept.iloc[0] == 8  # 16 channels, half removed
    assert (out / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ratios = read_layer_ratios(out / "layer_ratios.yaml")
    assert set(ratios) == {"layer1.0", "layer2.0", "fc1", "fc2"}
    assert all(0 <= r <= 0.75 for r in ratios.values())


def test_a_run_with_the_ratio_file_keeps_the_uniform_cuts_macs(analysed) -> None:
    tmp, out = analysed
    same = [*FAST, f"paths.cache_dir={tmp}/cache", f"paths.data_dir={tmp}/data"]
    uniform = run(compose_cfg(*same), tmp / "uniform")
    ratios = f"prune_method.layer_ratios={out}/layer_ratios.yaml"
    guided = run(compose_cfg(*same, ratios), tmp / "guided")
    assert abs(guided["macs_after"] / uniform["macs_after"] - 1) <= 0.02
    assert guided["macs_speedup"] > 1.5
    assert _widths(guided) != _widths(uniform)  # another allocation of the same MACs


def _widths(metrics: dict) -> dict[str, int]:
    return layer_widths(load_model(metrics["model_file"]))


def test_layer_ratios_prune_each_named_layer_by_its_ratio() -> None:
    import torch_pruning as tp

    model = lenet5(10, 1, 8)
    StructuredPruner(
        model,
        torch.randn(1, 1, 8, 8),
        importance=tp.importance.GroupMagnitudeImportance(p=1),
        ratio=0.0,
        layer_ratios={"layer1.0": 0.5, "fc1": 0.25},
    ).apply()
    assert layer_widths(model) == {"layer1.0": 3, "layer2.0": 16, "fc1": 90, "fc2": 84, "fc3": 10}


def _group(name: str) -> PrunableGroup:
    return PrunableGroup(name, (name,), (), 10)


def test_allocation_prunes_insensitive_groups_more() -> None:
    # pruning either group alone saves as much (macs), but only "fragile" loses accuracy
    rows = [
        {"group": g, "ratio": r, "val_acc": 0.9 - drop * r, "macs": 200 - 100 * r}
        for g, drop in (("robust", 0.0), ("fragile", 0.8))
        for r in (0.0, 0.25, 0.5, 0.75)
    ]

    def kept(ratios: dict[str, float]) -> float:  # MACs fall with either ratio, equally
        return 100.0 * (2 - ratios["robust"] - ratios["fragile"])

    allocation = allocate(pd.DataFrame(rows), [_group("robust"), _group("fragile")], kept, 100.0)
    assert allocation.gap <= 0.01  # within half the 2% promise
    assert allocation.group_ratios["robust"] == 0.75  # to its cap first: it costs nothing
    assert allocation.group_ratios["fragile"] == pytest.approx(0.25, abs=0.01)
    assert allocation.predicted_drop == pytest.approx(0.8 * allocation.group_ratios["fragile"])
    with pytest.raises(ConfigError, match="cannot reach the budget"):
        allocate(pd.DataFrame(rows), [_group("robust"), _group("fragile")], kept, 10.0)


def test_the_sensitivity_sweep_compares_the_uniform_and_the_guided_cut(analysed) -> None:
    _, out = analysed
    for ratios in ("null", str(out / "layer_ratios.yaml")):
        cfg = compose_cfg("+sweep=sensitivity", f"prune_method.layer_ratios={ratios}")
        assert cfg.schedule.name == "prune_then_distill" and cfg.student_init == "teacher"
        assert cfg.prune_method.unit == "channels" and cfg.teacher.seed == 0
        validate(cfg)
