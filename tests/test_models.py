"""Each config in conf/model builds, runs forward and backward, and names its classifier."""

import math
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from helpers.compose import model_cfg
from omegaconf import OmegaConf
from torch import nn

from kdprune.errors import ConfigError
from kdprune.models import build as build_model
from kdprune.models import classifier_path, cnn5, lenet5, resnet20
from kdprune.models.common import example_inputs
from kdprune.paths import CONF_DIR

MODEL_CONFIGS = sorted((CONF_DIR / "model").glob("*.yaml"))
HEAVY = {"resnet18", "resnet34", "resnet56", "vgg16_bn"}
NUM_CLASSES = 7

# The module paths the model docstrings promise (KD feature taps and pruning refer to them).
DOCUMENTED_PATHS = {
    "lenet5": ["layer1", "layer2", "fc3"],
    "lenet5_wide": ["layer1", "layer2", "fc3"],
    "cnn5": ["layer1", "layer3", "pool", "fc2"],
    "resnet20": ["conv1", "layer1", "layer3", "layer3.0.downsample", "fc"],
    "resnet56": ["conv1", "layer1", "layer3", "layer3.8.conv2", "fc"],
    "resnet18": ["conv1", "layer4", "fc"],
    "resnet34": ["conv1", "layer4", "fc"],
    "mobilenet_v2": ["features.0.0", "features.18", "classifier.1"],
    "vgg16_bn": ["features.0", "features.42", "avgpool", "classifier.3"],
}


def build(path: Path, in_channels: int, image_size: int, **overrides: object) -> nn.Module:
    """Compose a model config with a tiny dataset node, as the real run does, and build it."""
    cfg = model_cfg(path.stem, NUM_CLASSES, in_channels, image_size)
    return build_model({**cfg, **overrides})


def test_every_model_has_a_config() -> None:
    assert {p.stem for p in MODEL_CONFIGS} == set(DOCUMENTED_PATHS)


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize(("in_channels", "image_size"), [(1, 8), (3, 8), (1, 28), (3, 28), (3, 32)])
def test_forward_backward(path: Path, in_channels: int, image_size: int) -> None:
    torch.manual_seed(0)
    model = build(path, in_channels, image_size)
    batch = 2 if path.stem in HEAVY else 4
    logits = model(torch.randn(batch, in_channels, image_size, image_size))
    assert logits.shape == (batch, NUM_CLASSES)
    logits.square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=lambda p: p.stem)
def test_classifier_and_documented_paths(path: Path) -> None:
    model = build(path, 1, 8)
    head = model.get_submodule(classifier_path(model))
    assert type(head) is nn.Linear
    assert head.out_features == NUM_CLASSES
    for module_path in DOCUMENTED_PATHS[path.stem]:
        model.get_submodule(module_path)
    # In-place activations would overwrite tensors captured by KD forward hooks.
    assert not any(getattr(m, "inplace", False) for m in model.modules())


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=lambda p: p.stem)
def test_torch_pruning_halves_channels_and_keeps_classifier(path: Path) -> None:
    model = build(path, 1, 8)
    example = torch.randn(2, 1, 8, 8)
    macs_before, params_before = tp.utils.count_ops_and_params(model, example)
    head = model.get_submodule(classifier_path(model))
    pruner = tp.pruner.MagnitudePruner(
        model,
        example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.5,
        ignored_layers=[head],
    )
    pruner.step()
    macs_after, params_after = tp.utils.count_ops_and_params(model, example)
    assert model(example).shape == (2, NUM_CLASSES)
    assert head.out_features == NUM_CLASSES
    assert params_after < 0.5 * params_before
    assert macs_after < 0.5 * macs_before


def test_config_options_reach_the_builder() -> None:
    path = next(p for p in MODEL_CONFIGS if p.stem == "cnn5")
    model = build(path, 1, 28, widths=[8, 16], hidden=32, dropout=0.1)
    assert model.get_submodule("layer2.0").out_channels == 16
    assert not hasattr(model, "layer3")
    assert model.get_submodule("fc1").out_features == 32
    assert model.get_submodule("dropout").p == 0.1
    # 28 -> 14 -> 7 after two pools; pool_size 4 caps the grid at 4x4.
    assert model.get_submodule("fc1").in_features == 16 * 4 * 4


def test_cnn5_keeps_the_whole_grid_below_pool_size() -> None:
    model = cnn5(10, 1, 28)
    # 28 -> 14 -> 7 -> 3 after three pools, below pool_size 4.
    assert model.get_submodule("fc1").in_features == 128 * 3 * 3


def test_lenet5_flatten_size_follows_image_size() -> None:
    assert lenet5(10, 1, 28).get_submodule("fc1").in_features == 16 * 7 * 7
    assert lenet5(10, 1, 8).get_submodule("fc1").in_features == 16 * 2 * 2


def test_conv_init_is_kaiming_fan_out() -> None:
    torch.manual_seed(0)
    conv = resnet20(10, 3, 32).get_submodule("layer3.1.conv1")
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)


@pytest.mark.parametrize(
    ("builder", "args"),
    [
        (lenet5, (10, 1, 3)),
        (cnn5, (10, 1, 4)),
        (resnet20, (0, 3, 32)),
        (resnet20, (10, 0, 32)),
    ],
)
def test_impossible_inputs_raise_config_error(builder, args: tuple[int, int, int]) -> None:
    with pytest.raises(ConfigError):
        builder(*args)


def test_classifier_path_is_the_last_linear() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 3)))
    assert classifier_path(model) == "2.0"
    with pytest.raises(ConfigError):
        classifier_path(nn.Sequential(nn.Conv2d(1, 1, 1)))


def test_example_inputs_have_the_data_sets_shape_and_draw_like_randn() -> None:
    dataset = OmegaConf.create({"in_channels": 3, "image_size": 5})
    torch.manual_seed(0)
    drawn = example_inputs(dataset, batch=2)
    torch.manual_seed(0)
    assert torch.equal(drawn, torch.randn(2, 3, 5, 5))  # the same draws as the code it replaced
    state = torch.get_rng_state()
    zeros = example_inputs(dataset, zeros=True)
    assert zeros.shape == (1, 3, 5, 5) and not zeros.any()
    assert torch.equal(torch.get_rng_state(), state)  # zeros leave the generator where it was
