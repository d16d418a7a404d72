"""Model size measurements: weight sparsity, channel ratio, file size (parameters and MACs are
counted by `kdprune.models.counting`)."""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from kdprune.pruning.base import WEIGHTED_TYPES


def _effective_weight(module: nn.Module) -> Tensor:
    if hasattr(module, "weight_mask"):
        return module.get_parameter("weight_orig") * module.get_buffer("weight_mask")
    weight = module.weight
    if not isinstance(weight, Tensor):
        raise TypeError(f"{type(module).__name__}.weight is not a tensor")
    return weight


@torch.no_grad()
def nonzero_fraction(model: nn.Module, ignored: tuple[str, ...] = ()) -> float:
    """Fraction of non-zero conv and linear weights (masks applied), skipping `ignored` paths."""
    nonzero = total = 0
    for path, module in model.named_modules():
        skip = any(path == p or path.startswith(p + ".") for p in ignored)
        if isinstance(module, WEIGHTED_TYPES) and not skip:
            weight = _effective_weight(module)
            nonzero += int(torch.count_nonzero(weight))
            total += weight.numel()
    return nonzero / total if total else 1.0


@torch.no_grad()
def weight_sparsity(dense: nn.Module, compressed: nn.Module) -> float:
    """Fraction of the dense model's conv and linear weights that the compressed one removed or
    zeroed (masks applied): one axis for structured and masked pruning alike."""
    total = sum(m.weight.numel() for m in dense.modules() if isinstance(m, WEIGHTED_TYPES))
    kept = sum(
        int(torch.count_nonzero(_effective_weight(m)))
        for m in compressed.modules()
        if isinstance(m, WEIGHTED_TYPES)
    )
    return 1.0 - kept / total if total else 0.0


def conv_channels(model: nn.Module) -> int:
    """Total output channels over all conv layers."""
    return sum(m.out_channels for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd))


def _out_channels(module: nn.Module) -> int:
    """Output channels of a conv, or of the last conv of what replaced it (a factorised chain)."""
    convs = [m for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    return convs[-1].out_channels if convs else 0


def channel_ratio(dense: nn.Module, pruned: nn.Module) -> float:
    """Achieved fraction of the dense model's conv output channels removed, counted at the dense
    convs' paths (0 for mask-based pruning and for low-rank factorisation, which keeps them)."""
    convs = {n: m for n, m in dense.named_modules() if isinstance(m, nn.modules.conv._ConvNd)}
    before = sum(m.out_channels for m in convs.values())
    modules = dict(pruned.named_modules())
    after = sum(_out_channels(modules[n]) for n in convs if n in modules)
    return 1.0 - after / before if before else 0.0


def file_size_bytes(path: str | os.PathLike) -> int:
    """Size of a file in bytes."""
    return os.path.getsize(path)
