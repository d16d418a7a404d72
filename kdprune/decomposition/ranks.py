"""Choosing ranks: what each decomposable layer costs at given ranks, and rank rules with one knob.

A rank rule maps a knob t to every layer's ranks, growing with t: `uniform` keeps the fraction t
of each layer's full ranks, `energy` the fewest components holding the share t of each channel
mode's spectral energy, `vbmf` t times each mode's VBMF rank (Kim et al. 2016; t = 1: VBMF's own).
A layer is decomposed only where that makes it cheaper than the dense layer; a target is met by
searching t (`kdprune.pruning.lowrank`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from kdprune.decomposition.layers import FACTORISED, LinearSpec, effective_weight, layer_spec
from kdprune.decomposition.tensors import energy_rank, svdvals
from kdprune.decomposition.vbmf import evbmf_rank
from kdprune.errors import ConfigError

COST_UNITS = ("params", "macs")


@dataclass
class Layer:
    """One decomposable layer: its path, spec, method, where it runs and what it costs dense."""

    path: str
    module: nn.Module
    method: Any
    extent: tuple[int, ...]  # (H, W) of a conv's input, or (positions,) of a linear's
    dense: dict[str, int] = field(default_factory=dict)
    _costs: dict[tuple[int, ...], dict[str, int]] = field(default_factory=dict)

    @property
    def spec(self) -> Any:
        """The layer's spec (`kdprune.decomposition.layers`)."""
        return layer_spec(self.module)

    def full_ranks(self) -> tuple[int, ...]:
        """The ranks a uniform fraction of 1 gives."""
        return tuple(self.method.full_ranks(self.spec))

    def cost(self, ranks: tuple[int, ...]) -> dict[str, int]:
        """Params and MACs of the stand-in at `ranks` (cached; nothing is allocated)."""
        if ranks not in self._costs:
            meta = FACTORISED[self.method.kind](self.spec, ranks, device="meta")
            self._costs[ranks] = module_cost(meta, self.extent)
        return self._costs[ranks]


def _conv_out(conv: nn.Conv2d, extent: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(conv.padding, str):  # the stand-ins' convs take their padding as numbers
        raise ConfigError(f"padding={conv.padding!r}: the output size needs numeric padding.")
    return tuple(
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, k, s, p, d in zip(
            extent, conv.kernel_size, conv.stride, conv.padding, conv.dilation, strict=True
        )
    )


def module_cost(module: nn.Module, extent: tuple[int, ...]) -> dict[str, int]:
    """Params and MACs of a conv / linear or a chain of them run in order, on an input of
    `extent`, counted as Torch-Pruning's counter counts them (bias adds included)."""
    layers = [m for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    macs = 0
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            extent = _conv_out(layer, extent)
            per_position = layer.in_channels * layer.out_channels // layer.groups
            positions = math.prod(extent)
            macs += per_position * math.prod(layer.kernel_size) * positions
            macs += layer.out_channels * positions if layer.bias is not None else 0
        else:
            macs += layer.in_features * layer.out_features * extent[0]
            macs += layer.out_features if layer.bias is not None else 0
    params = sum(p.numel() for layer in layers for p in layer.parameters(recurse=False))
    return {"params": params, "macs": macs}


@torch.no_grad()
def collect_layers(
    model: nn.Module, example_inputs: Tensor, methods: dict[str, Any]
) -> list[Layer]:
    """The layers at `methods`' paths with their input extent (one forward pass) and dense cost."""
    extents: dict[str, tuple[int, ...]] = {}

    def hook(path: str, spec: Any):
        def record(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            x = inputs[0]
            is_linear = isinstance(spec, LinearSpec)
            extents[path] = (x.numel() // x.shape[-1],) if is_linear else tuple(x.shape[-2:])

        return record

    handles = [
        model.get_submodule(path).register_forward_pre_hook(hook(path, layer_spec(module)))
        for path, module in ((p, model.get_submodule(p)) for p in methods)
    ]
    flags = {module: module.training for module in model.modules()}
    try:
        model.eval()(example_inputs)
    finally:
        for module, training in flags.items():  # each module's own flag, as it was
            module.training = training
        for handle in handles:
            handle.remove()
    layers = []
    for path, method in methods.items():
        module = model.get_submodule(path)
        extent = extents[path]
        layers.append(Layer(path, module, method, extent, module_cost(module, extent)))
    return layers


class UniformRanks:
    """Every layer keeps the fraction t of its full ranks (t in [0, 1])."""

    def __init__(self, layer: Layer, min_rank: int) -> None:
        self.full, self.min_rank = layer.full_ranks(), min_rank
        self.knob_range = (0.0, 1.0)

    def __call__(self, t: float) -> tuple[int, ...]:
        return tuple(max(min(round(t * r), r), min(self.min_rank, r)) for r in self.full)


class _SpectralRanks:
    """Ranks chosen per channel mode from the spectrum of that mode's unfolding."""

    def __init__(self, layer: Layer, min_rank: int) -> None:
        self.layer, self.min_rank = layer, min_rank
        weight = effective_weight(layer.module)[0]
        unfoldings = layer.method.unfoldings(weight)
        self.shapes = [tuple(m.shape) for m in unfoldings]
        self.spectra = [svdvals(m) for m in unfoldings]

    def _ranks(self, mode_ranks: list[int]) -> tuple[int, ...]:
        clipped = [
            max(min(r, len(s)), min(self.min_rank, len(s)))
            for r, s in zip(mode_ranks, self.spectra, strict=True)
        ]
        return tuple(self.layer.method.from_mode_ranks(self.layer.spec, tuple(clipped)))


class EnergyRanks(_SpectralRanks):
    """Each mode keeps the fewest components holding the share t of its energy (t in [0, 1])."""

    def __init__(self, layer: Layer, min_rank: int) -> None:
        super().__init__(layer, min_rank)
        self.knob_range = (0.0, 1.0)

    def __call__(self, t: float) -> tuple[int, ...]:
        return self._ranks([energy_rank(s, t) for s in self.spectra])


class VBMFRanks(_SpectralRanks):
    """Each mode keeps t times its VBMF rank (t = 1: Kim et al.'s ranks), t from 0 to where every
    mode is at full rank."""

    def __init__(self, layer: Layer, min_rank: int) -> None:
        super().__init__(layer, min_rank)
        self.vbmf = [
            evbmf_rank(s, shape) for s, shape in zip(self.spectra, self.shapes, strict=True)
        ]
        top = max(len(s) / r for s, r in zip(self.spectra, self.vbmf, strict=True))
        self.knob_range = (0.0, top)

    def __call__(self, t: float) -> tuple[int, ...]:
        return self._ranks([round(t * r) for r in self.vbmf])


RANK_RULES = {"uniform": UniformRanks, "energy": EnergyRanks, "vbmf": VBMFRanks}
