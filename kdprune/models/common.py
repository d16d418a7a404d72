"""Helpers shared by the model builders: input checks, weight init, the classifier lookup and a
copy that works while pruning masks are attached."""

import copy
from typing import Any

import torch
from torch import nn

from kdprune.errors import ConfigError


def check_input_spec(
    model: str, num_classes: int, in_channels: int, image_size: int, min_image_size: int = 1
) -> None:
    """Raise ConfigError unless the class count, channel count and image size can build `model`."""
    if num_classes < 1:
        raise ConfigError(f"{model}: num_classes must be at least 1, got {num_classes}.")
    if in_channels < 1:
        raise ConfigError(f"{model}: in_channels must be at least 1, got {in_channels}.")
    if image_size < min_image_size:
        raise ConfigError(
            f"{model}: image_size must be at least {min_image_size}, got {image_size}."
        )


def example_inputs(
    dataset: Any, batch: int = 1, device: torch.device | str | None = None, zeros: bool = False
) -> torch.Tensor:
    """`batch` inputs of the data set's shape (`dataset.in_channels` x `image_size` squared), for
    tracing, MACs counting and shape probes: standard normal draws from the global generator, or
    zeros where drawing must not move it."""
    size = (batch, dataset.in_channels, dataset.image_size, dataset.image_size)
    return torch.zeros(size, device=device) if zeros else torch.randn(size, device=device)


def init_weights(model: nn.Module) -> None:
    """Set convs Kaiming-normal (fan_out, ReLU) and norms to identity, as torchvision does."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d | nn.GroupNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def disable_inplace(model: nn.Module) -> None:
    """Turn in-place activations off so tensors captured by forward hooks are not overwritten."""
    for module in model.modules():
        if isinstance(module, nn.ReLU | nn.ReLU6):
            module.inplace = False


def classifier_path(model: nn.Module) -> str:
    """Return the module path of the final nn.Linear, the layer that produces the logits."""
    paths = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not paths:
        raise ConfigError(f"{type(model).__name__} has no nn.Linear layer to use as classifier.")
    return paths[-1]


def clone_model(model: nn.Module) -> nn.Module:
    """Deep-copy `model`, also while pruning masks are attached (plain deepcopy fails then)."""
    # A masked module holds `weight = weight_orig * weight_mask`, a non-leaf tensor that
    # copy.deepcopy refuses; handing deepcopy a detached stand-in through its memo fixes that.
    memo: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)
