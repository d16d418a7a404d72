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


ROOT_TYPES = [tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR]  # the layers whose channels are cut


def prunable_groups(model: nn.Module, example_inputs: Tensor, ignored: Iterable[str]) -> list:
    """Torch-Pruning's dependency groups of `model` that a cut may touch, outside the `ignored`
    module paths; ConfigError if there are none."""
    with eval_mode(model), autograd_enabled():
        graph = tp.DependencyGraph().build_dependency(
            model, move_inputs(example_inputs, model), verbose=False
        )
    ignored = tuple(ignored)
    modules = [m for path in ignored for m in model.get_submodule(path).modules()]
    groups = list(graph.get_all_groups(modules, ROOT_TYPES))
    if not groups:
        raise ConfigError(
            f"nothing left to prune in {type(model).__name__}: every prunable layer "
            f"is ignored ({', '.join(ignored)})."
        )
    return groups


def layer_widths(model: nn.Module) -> dict[str, int]:
    """Module path -> output channels (convs) or features (linears) of every such layer."""
    return {
        path: m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features
        for path, m in model.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd | nn.Linear)
    }


def keeping(width: int, kept: int) -> float:
    """The channel ratio that leaves `kept` of `width` channels: Torch-Pruning keeps
    int(c * (1 - r)) of c, so r = 1 - (k + 0.5) / c keeps k."""
    return 1.0 - (kept + 0.5) / width


def scheduled_widths(
    dense: dict[str, int], final: dict[str, int], fraction: float
) -> dict[str, int]:
    """Per-layer widths `fraction` of the way from dense to final (never past final)."""
    return {
        path: max(final[path], round(width - fraction * (width - final[path])))
        for path, width in dense.items()
        if path in final
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
