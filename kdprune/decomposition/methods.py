"""Decomposition methods: the objects a `prune_method=tucker2|cp` config builds (`decomposition`).

Each turns one layer into its factorised stand-in at given ranks, and says how ranks are counted
for that layer: `full_ranks` (what a uniform rank fraction scales), `unfoldings` (the matrices
whose spectra choose ranks by energy or VBMF) and `from_mode_ranks` (ranks from those choices).
A conv's unfoldings are mode 1 (input channels) then mode 0 (output channels).
"""

from __future__ import annotations

import math
from typing import cast

from torch import Tensor, nn

from kdprune.decomposition.layers import (
    ConvSpec,
    CPConv,
    Factorised,
    LinearSpec,
    LowRankLinear,
    Tucker2Conv,
    effective_weight,
    factorised,
)
from kdprune.decomposition.tensors import cp, svd_factors, tucker2, unfold
from kdprune.errors import ConfigError


def _check_solver(iterations: object, tolerance: object) -> None:
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ConfigError(f"decomposition iterations must be an int >= 1, got {iterations!r}.")
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or tolerance < 0:
        raise ConfigError(f"decomposition tolerance must be a number >= 0, got {tolerance!r}.")


class Tucker2:
    """Tucker-2 by HOOI (Kim et al. 2016): ranks (r_in, r_out) of the channel modes."""

    kind = Tucker2Conv.kind

    def __init__(self, iterations: int = 20, tolerance: float = 1e-9) -> None:
        _check_solver(iterations, tolerance)
        self.iterations, self.tolerance = iterations, tolerance

    def full_ranks(self, spec: ConvSpec) -> tuple[int, ...]:
        """Input and output channels: the ranks at which the decomposition is exact."""
        return spec.in_channels, spec.out_channels

    def unfoldings(self, weight: Tensor) -> list[Tensor]:
        """The mode-1 and mode-0 unfoldings of the conv weight."""
        return [unfold(weight, 1), unfold(weight, 0)]

    def from_mode_ranks(self, spec: ConvSpec, mode_ranks: tuple[int, ...]) -> tuple[int, ...]:
        """Tucker-2 ranks are the per-mode ranks themselves."""
        return tuple(mode_ranks)

    def decompose(self, module: nn.Module, ranks: tuple[int, ...]) -> Tucker2Conv:
        """The Tucker-2 stand-in of `module` (a conv or an earlier stand-in) at `ranks`."""
        weight, bias = effective_weight(module)
        layer = cast(Tucker2Conv, factorised(self.kind, module, ranks))  # the kind's class
        r_in, r_out = ranks
        layer.load_factors(*tucker2(weight, (r_in, r_out), self.iterations, self.tolerance))
        _copy_bias(layer, bias)
        return layer


class CP:
    """CP by ALS (Lebedev et al. 2015): one rank R for the four-factor chain.

    Its full rank for a uniform rank fraction is the break-even rank at which the chain has as
    many weights as the conv, O*I*kh*kw / (O + I + kh + kw); energy and VBMF take the larger of
    the two channel modes' ranks (a CP rank below either cannot reproduce that mode).
    """

    kind = CPConv.kind

    def __init__(self, iterations: int = 100, tolerance: float = 1e-4, seed: int = 0) -> None:
        _check_solver(iterations, tolerance)
        self.iterations, self.tolerance, self.seed = iterations, tolerance, int(seed)

    def full_ranks(self, spec: ConvSpec) -> tuple[int, ...]:
        """The break-even rank (see the class docstring)."""
        (kh, kw), o, i = spec.kernel_size, spec.out_channels, spec.in_channels
        return (max(math.ceil(o * i * kh * kw / (o + i + kh + kw)), 1),)

    def unfoldings(self, weight: Tensor) -> list[Tensor]:
        """The mode-1 and mode-0 unfoldings of the conv weight."""
        return [unfold(weight, 1), unfold(weight, 0)]

    def from_mode_ranks(self, spec: ConvSpec, mode_ranks: tuple[int, ...]) -> tuple[int, ...]:
        """The larger of the two channel-mode ranks."""
        return (max(mode_ranks),)

    def decompose(self, module: nn.Module, ranks: tuple[int, ...]) -> CPConv:
        """The CP stand-in of `module` (a conv or an earlier stand-in) at `ranks`."""
        weight, bias = effective_weight(module)
        layer = cast(CPConv, factorised(self.kind, module, ranks))  # the kind's class
        out, inp, vertical, horizontal = cp(
            weight, ranks[0], self.iterations, self.tolerance, self.seed
        )
        layer.load_factors(out, inp, vertical, horizontal)
        _copy_bias(layer, bias)
        return layer


class SVD:
    """Truncated SVD of a linear layer: rank r (Eckart-Young optimal)."""

    kind = LowRankLinear.kind

    def full_ranks(self, spec: LinearSpec) -> tuple[int, ...]:
        """min(in, out): the rank at which the SVD is exact."""
        return (min(spec.in_features, spec.out_features),)

    def unfoldings(self, weight: Tensor) -> list[Tensor]:
        """The weight matrix itself."""
        return [weight]

    def from_mode_ranks(self, spec: LinearSpec, mode_ranks: tuple[int, ...]) -> tuple[int, ...]:
        """The rank itself."""
        return tuple(mode_ranks)

    def decompose(self, module: nn.Module, ranks: tuple[int, ...]) -> LowRankLinear:
        """The low-rank stand-in of `module` (a linear layer or an earlier stand-in)."""
        weight, bias = effective_weight(module)
        layer = cast(LowRankLinear, factorised(self.kind, module, ranks))  # the kind's class
        layer.load_factors(*svd_factors(weight, ranks[0]))
        _copy_bias(layer, bias)
        return layer


def _copy_bias(layer: Factorised, bias: Tensor | None) -> None:
    target = layer.effective_bias()  # there is one exactly when the replaced layer had a bias
    if bias is not None and target is not None:
        target.data.copy_(bias.detach())
