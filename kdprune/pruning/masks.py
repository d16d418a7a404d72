"""Helpers for models carrying `torch.nn.utils.prune` masks: copy, fold, plain state_dict."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from kdprune.models.common import clone_model

__all__ = ["clone_model", "has_masks", "make_permanent", "plain_state_dict"]


def _pruning_hooks(module: nn.Module) -> list[prune.BasePruningMethod]:
    return [h for h in module._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]


def has_masks(model: nn.Module) -> bool:
    """True if any submodule still carries a `torch.nn.utils.prune` mask."""
    return any(_pruning_hooks(module) for module in model.modules())


def make_permanent(model: nn.Module) -> int:
    """Fold every pruning mask into its weight (`prune.remove`); return how many were folded."""
    folded = 0
    for module in model.modules():
        for hook in _pruning_hooks(module):
            prune.remove(module, hook._tensor_name)
            folded += 1
    return folded


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return the state_dict (on CPU) a mask-free copy would have, leaving `model` untouched."""
    state = model.state_dict()
    for key in [k for k in state if k.endswith("_orig")]:
        base = key[: -len("_orig")]
        if base + "_mask" in state:
            # The same product the forward pre-hook computes, so values are bit-identical.
            state[base] = state.pop(key) * state.pop(base + "_mask")
    return {key: value.detach().cpu().clone() for key, value in state.items()}
