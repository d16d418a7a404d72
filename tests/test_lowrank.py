"""prune_method=tucker2|cp: targets reached, layers chosen, bad input refused, files round-trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import compose
from helpers.compose import group_node
from helpers.fresh_process import outputs_in_a_fresh_process
from torch import nn

from kdprune.decomposition import (
    CP,
    SVD,
    CPConv,
    Factorised,
    LowRankLinear,
    Tucker2,
    Tucker2Conv,
    replace_module,
)
from kdprune.errors import ConfigError, KdpruneError
from kdprune.export import export_onnx
from kdprune.instantiation import instantiate
from kdprune.metrics import count_macs_params
from kdprune.models import build, lenet5, resnet20
from kdprune.pruning import LowRankPruner, load_model, read_model_file, save_model, validate

SIZE, CLASSES = 8, 10
TOLERANCE = 0.02


def make_pruner(method: str, model: nn.Module, **overrides: Any) -> LowRankPruner:
    cfg = group_node("prune_method", method, **overrides)
    validate(cfg)
    return instantiate(cfg.pruner)(model=model, example_inputs=example(model))


def example(model: nn.Module) -> torch.Tensor:
    channels = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    return torch.randn(1, channels, SIZE, SIZE)


def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "lenet5_wide": lenet5(CLASSES, 1, SIZE, widths=(16, 32)),
        "resnet20": resnet20(CLASSES, 3, SIZE),
    }


@pytest.mark.parametrize("unit", ["macs", "params"])
@pytest.mark.parametrize("method", ["tucker2", "cp"])
@pytest.mark.parametrize("name", ["lenet5_wide", "resnet20"])
def test_params_and_macs_targets_are_reached(name: str, method: str, unit: str) -> None:
    model = models()[name]
    x = example(model)
    dense = count_macs_params(model, x)
    linears = unit == "params" and name.startswith("lenet")  # its params sit in linear layers
    pruner = make_pruner(
        method, model, unit=unit, ratio=0.5, decompose_linears=linears, iterations=5
    )
    result = pruner.apply()
    after = count_macs_params(model, x)
    achieved = 1 - after[unit == "params"] / dense[unit == "params"]
    assert achieved == pytest.approx(0.5, abs=TOLERANCE)
    assert result.history and all(set(s) == {"path", "kind", "ranks"} for s in result.history)
    kinds = {type(m) for m in model.modules() if isinstance(m, Factorised)}
    assert kinds <= {Tucker2Conv if method == "tucker2" else CPConv, LowRankLinear}
    assert model.eval()(torch.randn(2, *x.shape[1:])).shape == (2, CLASSES)


@pytest.mark.parametrize("allocation", ["energy", "vbmf"])
def test_spectral_allocations_reach_a_tucker2_target(allocation: str) -> None:
    model = models()["resnet20"]
    x = example(model)
    dense = count_macs_params(model, x)[0]
    make_pruner("tucker2", model, allocation=allocation, ratio=0.4).apply()
    assert 1 - count_macs_params(model, x)[0] / dense == pytest.approx(0.4, abs=TOLERANCE)


def test_channels_unit_sets_the_ranks_directly() -> None:
    model = models()["resnet20"]
    ranks = make_pruner("tucker2", model, unit="channels", ratio=0.5).plan()
    assert ranks["layer3.0.conv2"] == (32, 32)  # half of 64 in and out
    vbmf = make_pruner("tucker2", model, unit="channels", ratio=0.0, allocation="vbmf").plan()
    assert vbmf and all(1 <= r <= 64 for ranks in vbmf.values() for r in ranks)


def test_classifier_1x1_and_ignored_layers_stay_dense() -> None:
    model = models()["lenet5_wide"]
    result = make_pruner(
        "tucker2", model, ignored_layers=["layer1"], decompose_linears=True, ratio=0.3
    ).apply()
    paths = {step["path"] for step in result.history}
    assert "layer1.0" not in paths and "fc3" not in paths and "layer2.0" in paths
    assert isinstance(model.fc3, nn.Linear) and isinstance(model.layer1[0], nn.Conv2d)
    assert {step["kind"] for step in result.history} <= {"tucker2", "svd"}


def test_gradual_ranks_shrink_to_the_one_shot_cut() -> None:
    model = models()["lenet5_wide"]
    pruner = make_pruner("tucker2", model, ratio=0.5)
    final = pruner.plan()
    seen = []
    for fraction in (0.3, 0.6, 0.6, 1.0):
        result = pruner.apply_fraction(fraction)
        seen.append(None if result is None else {s["path"]: s["ranks"] for s in result.history})
    assert seen[2] is None  # the same fraction again changes nothing
    assert model.layer2[0].ranks == final["layer2.0"]
    first, last = seen[0]["layer2.0"], seen[3]["layer2.0"]
    assert all(a >= b for a, b in zip(first, last, strict=True)) and first != last


@pytest.mark.parametrize(
    ("method", "overrides", "match"),
    [
        ("tucker2", {"ratio": 1.0}, "ratio"),
        ("tucker2", {"allocation": "spectral"}, "allocation"),
        ("tucker2", {"min_rank": 0}, "min_rank"),
        ("cp", {"iterations": 0}, "iterations"),
        ("tucker2", {"unit": "bytes"}, "unit"),
    ],
)
def test_bad_options_are_refused_without_a_model(method: str, overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        validate(group_node("prune_method", method, **overrides))


def test_a_model_with_nothing_to_decompose_is_refused() -> None:
    model = lenet5(CLASSES, 1, SIZE)
    with pytest.raises(ConfigError, match="nothing to decompose"):
        make_pruner("tucker2", model, ignored_layers=["layer1", "layer2"])


def test_an_unreachable_params_target_names_the_linear_option() -> None:
    with pytest.raises(ConfigError, match="decompose_linears"):
        make_pruner("cp", lenet5(CLASSES, 1, SIZE), unit="params", ratio=0.6)


def decomposed(name: str, method: str, **overrides: Any) -> tuple[nn.Module, dict, list]:
    """Model `name` built from conf/, decomposed by `method`: (model, model cfg, history)."""
    torch.manual_seed(0)
    cfg = compose.model_cfg(name, CLASSES, 3, SIZE)
    model = build(cfg)
    history = make_pruner(method, model, iterations=5, **overrides).apply().history
    return model.eval(), cfg, history


def test_round_trip_with_a_pruning_history_before_the_decomposition(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = compose.model_cfg("resnet20", CLASSES, 3, SIZE)
    model = build(cfg)
    l1 = instantiate(compose.compose_cfg("prune_method=l1").prune_method.pruner)
    history = l1(model=model, example_inputs=torch.randn(1, 3, SIZE, SIZE)).apply().history
    history += make_pruner("tucker2", model, ratio=0.3).apply().history
    path = save_model(tmp_path / "m.pt", model.eval(), cfg, history)
    payload = read_model_file(path)
    assert payload["version"] == 2 and payload["history"]
    assert {d["after"] for d in payload["decompositions"]} == {len(payload["history"])}
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(load_model(path)(x), model(x))


def test_a_version_1_file_still_loads(tmp_path: Path) -> None:
    cfg = compose.model_cfg("lenet5", CLASSES, 3, SIZE)
    model = build(cfg).eval()
    payload = {
        "format": "kdprune.model",
        "version": 1,
        "model_cfg": cfg,
        "history": [],
        "input_shape": None,
        "extra": {},
        "state_dict": model.state_dict(),
    }
    torch.save(payload, tmp_path / "v1.pt")
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "v1.pt")(x), model(x))


def test_a_file_naming_an_unknown_decomposition_is_refused(tmp_path: Path) -> None:
    model, cfg, history = decomposed("lenet5", "tucker2")
    history[0]["kind"] = "pickle"
    path = save_model(tmp_path / "bad.pt", model, cfg, history)
    with pytest.raises(KdpruneError, match="does not rebuild.*unknown decomposition 'pickle'"):
        load_model(path)


def mixed() -> tuple[nn.Module, dict, list]:
    """lenet5 with a CP conv, a Tucker-2 conv and an SVD linear: (model, cfg, steps)."""
    torch.manual_seed(0)
    cfg = compose.model_cfg("lenet5", CLASSES, 3, SIZE)
    model = build(cfg)
    steps = [
        {"path": "layer1.0", "kind": "cp", "ranks": [4]},
        {"path": "layer2.0", "kind": "tucker2", "ranks": [3, 8]},
        {"path": "fc1", "kind": "svd", "ranks": [10]},
    ]
    methods = {"cp": CP(iterations=5), "tucker2": Tucker2(), "svd": SVD()}
    for step in steps:
        module = model.get_submodule(step["path"])
        replace_module(model, step["path"], methods[step["kind"]].decompose(module, step["ranks"]))
    return model.eval(), cfg, steps


def test_fresh_process_loads_identical_decomposed_models(tmp_path: Path) -> None:
    x = torch.randn(4, 3, SIZE, SIZE)
    expected = {}
    for name, (model, cfg, history) in {
        "mixed": mixed(),
        "resnet20-tucker2": decomposed("resnet20", "tucker2"),
    }.items():
        save_model(tmp_path / f"{name}.pt", model, cfg, history)
        with torch.no_grad():
            expected[name] = model(x)
    outputs = outputs_in_a_fresh_process(tmp_path, x, expected)
    for name, value in expected.items():
        assert torch.equal(outputs[name], value), name


def test_onnx_export_of_every_stand_in_matches(tmp_path: Path) -> None:
    model, cfg, history = mixed()
    path = save_model(tmp_path / "m.pt", model, cfg, history)
    out = export_onnx(path, tmp_path / "m.onnx")  # raises unless ONNX Runtime agrees
    assert out.is_file()


@pytest.mark.parametrize("method", ["tucker2", "cp"])
def test_factorised_layers_keep_their_output_channels_in_the_ledger(method: str) -> None:
    import copy

    from kdprune.metrics import channel_ratio

    model = models()["resnet20"]
    dense = copy.deepcopy(model)
    make_pruner(method, model, unit="macs", ratio=0.5, iterations=5).apply()
    assert any(isinstance(m, Factorised) for m in model.modules())
    assert channel_ratio(dense, model) == 0.0  # a chain of thin convs removes no channel
