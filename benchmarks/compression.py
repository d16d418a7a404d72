"""(d)'s models: dense, compressed and floor versions, and the MACs in their narrow convs."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.fixtures import build, model_cfg
from benchmarks.sizes import Sizes

# (in_channels, image_size) of the data each latency model is meant for.
LATENCY_INPUTS = {"lenet5": (1, 28), "resnet20": (3, 32), "mobilenet_v2": (3, 32)}
FLOOR = -1.0  # stands for the floor model in the list of MACs reductions
NARROW = 16  # channels per vector block of the AVX-512 kernels (ORT's NCHWc, oneDNN)


@dataclass
class Variant:
    """One model of the latency table: dense or compressed, its MACs and its ONNX session."""

    name: str
    model: nn.Module
    macs: int
    session: Any
    input: tuple[int, int]  # (in_channels, image_size)
    channels: list[int] = field(default_factory=list)
    round_to: int | None = None
    narrow_macs: int = 0  # MACs in convs pruned below a vector block (see narrowed_macs)


def _prune_macs(
    model: nn.Module,
    example: torch.Tensor,
    reduction: float,
    round_to: int | None,
    tolerance: float,
    max_layer_ratio: float,
) -> tuple[nn.Module, list]:
    import torch_pruning as tp

    from kdprune.pruning import StructuredPruner

    pruned = copy.deepcopy(model)
    result = StructuredPruner(
        pruned,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=1),
        ratio=reduction,
        unit="macs",
        round_to=round_to,
        tolerance=tolerance,
        max_layer_ratio=max_layer_ratio,
    ).apply()
    return pruned.eval(), result.history


def compress(
    model: nn.Module,
    example: torch.Tensor,
    reduction: float,
    roundings: Sequence[int],
    tolerance: float = 0.04,
) -> tuple[nn.Module, list, int | None]:
    """Prune a copy to remove `reduction` of its MACs (L1, uniform).

    Returns the pruned copy, its history and the rounding used: the first of `roundings` with
    which the target can be reached, else none (the rule of `prune_method.round_to: auto`).
    """
    from kdprune.pruning.rounding import first_reaching

    def prune(round_to: int | None) -> tuple[nn.Module, list]:
        return _prune_macs(model, example, reduction, round_to, tolerance, 0.9)

    (pruned, history), round_to = first_reaching((*roundings, None), prune)
    return pruned, history, round_to


def floor_model(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, list]:
    """A copy with every prunable layer cut to 10% of its channels (1-2% of the MACs left):
    what a call of this graph costs when almost no arithmetic is left."""
    import torch_pruning as tp

    from kdprune.pruning import StructuredPruner

    floor = copy.deepcopy(model)
    importance = tp.importance.GroupMagnitudeImportance(p=1)
    history = StructuredPruner(floor, example, importance=importance, ratio=0.9).apply().history
    return floor.eval(), history


def conv_widths(model: nn.Module) -> list[int]:
    """Output channels of every conv, in order (what pruning left)."""
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def _cut(
    name: str, dense: nn.Module, example: torch.Tensor, reduction: float, sizes: Sizes
) -> tuple[nn.Module, list, str, int | None]:
    """The model, history, label and rounding of one entry of the MACs reductions."""
    if reduction == 0:
        return dense, [], "dense", None
    if reduction == FLOOR:
        return (*floor_model(dense, example), "floor", None)
    tolerance = sizes.latency_tolerance.get(name, sizes.latency_default_tolerance)
    model, history, rounding = compress(
        dense, example, reduction, sizes.latency_roundings, tolerance
    )
    return model, history, f"{1 / (1 - reduction):g}x", rounding


def variants(name: str, sizes: Sizes, folder: Path) -> list[Variant]:
    """Dense and compressed versions of one model, each saved, exported to ONNX, opened in ORT."""
    from kdprune.export import export_onnx, ort_session
    from kdprune.metrics import count_macs_params
    from kdprune.pruning import save_model

    c, s = LATENCY_INPUTS[name]
    cfg, example = model_cfg(name, c, s), torch.randn(1, c, s, s)
    dense = build(name, c, s).eval()
    out = []
    for reduction in (0.0, *sizes.latency_reductions, FLOOR):
        model, history, label, rounding = _cut(name, dense, example, reduction, sizes)
        path = save_model(folder / f"{name}-{label}.pt", model, cfg, history)
        onnx = export_onnx(path, path.with_suffix(".onnx"))
        macs, _ = count_macs_params(model, example)
        session = ort_session(onnx, sizes.threads)
        narrow = narrowed_macs(dense, model, example) if 0 < reduction else 0
        out.append(
            Variant(label, model, macs, session, (c, s), conv_widths(model), rounding, narrow)
        )
    return out


def conv_macs(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, int, int, int]]:
    """MACs per image (Torch-Pruning's layer-wise count), in channels, out channels and groups of
    every conv, by module name."""
    import torch_pruning as tp

    _, _, layer_macs, _ = tp.utils.count_ops_and_params(model.eval(), example, layer_wise=True)
    return {
        name: (int(layer_macs[m]), m.in_channels, m.out_channels, m.groups)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    }


def narrowed_macs(dense: nn.Module, compressed: nn.Module, example: torch.Tensor) -> int:
    """MACs of the convs that pruning made narrower than a vector block (NARROW channels, in or
    out) though they were at least that wide in the dense model."""
    before = conv_macs(dense, example)
    return sum(
        macs
        for name, (macs, c_in, c_out, _) in conv_macs(compressed, example).items()
        if min(c_in, c_out) < NARROW <= min(before[name][1:3])
    )


def wide_floor_macs(model: nn.Module, example: torch.Tensor) -> int:
    """The fewest conv MACs left if no conv may be cut below NARROW channels, in or out (a
    grouped conv loses MACs with its channels only). Other layers' MACs are left out, so the true
    floor is higher still."""
    total = 0.0
    for macs, c_in, c_out, groups in conv_macs(model, example).values():
        keep_in, keep_out = min(c_in, NARROW) / c_in, min(c_out, NARROW) / c_out
        total += macs * (keep_out if groups > 1 else keep_in * keep_out)
    return int(total)
