"""Torch-Pruning histories and layer widths: replay a cut on a fresh model, read what a cut
left, bind per-layer ratios to a model."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch_pruning as tp
from torch import Tensor, nn

from kdprune.errors import ConfigError
from kdprune.pruning.base import is_ignored, move_inputs
from kdprune.pruning.calibration import autograd_enabled, eval_mode
from kdprune.pruning.layer_ratios import read_layer_ratios


def replay_history(model: nn.Module, example_inputs: Tensor, history: list[list[Any]]) -> None:
    """Re-apply a Torch-Pruning history, in order, to a fresh model of the same architecture."""
    if not history:
        return
    with eval_mode(model), autograd_enabled():
        graph = tp.DependencyGraph().build_dependency(
            model, example_inputs=move_inputs(example_inputs, model), verbose=False
        )
        graph.load_pruning_history([list(step) for step in history])


def layer_widths(model: nn.Module) -> dict[str, int]:
    """Module path -> output channels (convs) or features (linears) of every such layer."""
    return {
        path: m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features
        for path, m in model.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd | nn.Linear)
    }


def bound_ratios(model: nn.Module, layer_ratios: Any, ignored: Iterable[str]) -> dict[str, float]:
    """The per-layer ratios (read from their file), checked against the model: every path is
    a conv or linear layer that is not ignored."""
    if layer_ratios is None:
        return {}
    ratios = read_layer_ratios(layer_ratios)
    widths = layer_widths(model)
    for path in ratios:
        if path not in widths or is_ignored(path, ignored):
            what = "is ignored" if path in widths else "is not a conv or linear layer"
            raise ConfigError(
                f"layer_ratios names {path!r}, which {what} in {type(model).__name__}."
            )
    return ratios


def plain_history(history: Iterable[Any]) -> list[list[Any]]:
    """A Torch-Pruning history as JSON-ready lists: [module path, is out channel, indices]."""
    return [[str(name), bool(out), [int(i) for i in idxs]] for name, out, idxs in history]
