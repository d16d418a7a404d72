"""Factorised layers that stand in for a conv or linear layer, and the specs that shape them.

Each factorised layer is an `nn.Sequential` of plain convs / linears (so Torch-Pruning's counter,
ONNX export and any CPU kernel see ordinary layers), built from the replaced layer's spec and its
ranks alone, so a model file can rebuild it before loading weights:

- `Tucker2Conv` (Kim et al. 2016): 1x1 `first` (I -> r_in) -> k x k `core` (r_in -> r_out, the
  conv's stride/padding/dilation) -> 1x1 `last` (r_out -> O, the bias). A factor at full rank is
  left out (its orthogonal matrix is folded into the core): Tucker-1 on a 3-channel input.
- `CPConv` (Lebedev et al. 2015): 1x1 `first` (I -> R) -> kh x 1 depthwise `vertical` -> 1 x kw
  depthwise `horizontal` -> 1x1 `last` (R -> O, the bias).
- `LowRankLinear`: linear `first` (in -> r, no bias) -> linear `last` (r -> out), a truncated SVD.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from kdprune.errors import ConfigError


@dataclass(frozen=True)
class ConvSpec:
    """What shapes a 2-d conv: channels, kernel, stride, padding, dilation, bias or not."""

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    bias: bool


@dataclass(frozen=True)
class LinearSpec:
    """What shapes a linear layer."""

    in_features: int
    out_features: int
    bias: bool


def _pair(value: Any) -> tuple[int, int]:
    """A 2-d conv's (height, width) setting as a pair of ints."""
    height, width = value
    return int(height), int(width)


def layer_spec(module: nn.Module) -> ConvSpec | LinearSpec | None:
    """The spec of a decomposable conv / linear or of a factorised stand-in; None otherwise
    (grouped or depthwise convs, padding modes other than zeros, `padding='same'`, other types)."""
    if isinstance(module, Factorised):
        return module.spec
    if isinstance(module, nn.Linear):
        return LinearSpec(module.in_features, module.out_features, module.bias is not None)
    if not isinstance(module, nn.Conv2d) or module.groups != 1:
        return None
    padding = (0, 0) if module.padding == "valid" else module.padding
    if isinstance(padding, str) or module.padding_mode != "zeros":
        return None
    return ConvSpec(
        module.in_channels,
        module.out_channels,
        _pair(module.kernel_size),
        _pair(module.stride),
        _pair(padding),
        _pair(module.dilation),
        module.bias is not None,
    )


def _conv(cin: int, cout: int, kernel: Any, like: dict[str, Any], **options: Any) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, **options, **like)


class Factorised(nn.Sequential):
    """A chain of layers standing in for one layer; `spec`, `ranks` and `kind` describe it."""

    kind = ""

    def __init__(self, layers: OrderedDict, spec: ConvSpec | LinearSpec, ranks: tuple[int, ...]):
        super().__init__(layers)
        self.spec, self.ranks = spec, tuple(int(r) for r in ranks)

    def has(self, name: str) -> bool:
        """True if the chain has a layer called `name` (full-rank factors are left out)."""
        return name in self._modules

    def extra_repr(self) -> str:
        return f"ranks={list(self.ranks)}"

    def effective_weight(self) -> Tensor:
        """The single layer's weight this chain computes (each kind defines it)."""
        raise NotImplementedError

    def effective_bias(self) -> Tensor | None:
        """The single layer's bias this chain computes (each kind defines it)."""
        raise NotImplementedError


class Tucker2Conv(Factorised):
    """1x1 -> k x k core -> 1x1; `ranks` = (r_in, r_out)."""

    kind = "tucker2"
    first: nn.Conv2d  # absent at full input rank (see `has`)
    core: nn.Conv2d
    last: nn.Conv2d  # absent at full output rank

    def __init__(self, spec: ConvSpec, ranks: tuple[int, int], **like: Any) -> None:
        r_in, r_out = check_ranks(self.kind, spec, ranks)
        layers = OrderedDict()
        if r_in < spec.in_channels:
            layers["first"] = _conv(spec.in_channels, r_in, 1, like, bias=False)
        layers["core"] = _conv(
            r_in,
            r_out,
            spec.kernel_size,
            like,
            stride=spec.stride,
            padding=spec.padding,
            dilation=spec.dilation,
            bias=spec.bias and r_out == spec.out_channels,
        )
        if r_out < spec.out_channels:
            layers["last"] = _conv(r_out, spec.out_channels, 1, like, bias=spec.bias)
        super().__init__(layers, spec, (r_in, r_out))

    @torch.no_grad()
    def load_factors(self, u_in: Tensor, core: Tensor, u_out: Tensor) -> None:
        """Set the weights from a Tucker-2 decomposition (`kdprune.decomposition.tucker2`)."""
        if self.has("first"):
            self.first.weight.copy_(u_in.T[:, :, None, None])
        else:  # the input factor is square: fold it into the core
            core = torch.einsum("pq...,iq->pi...", core, u_in)
        if self.has("last"):
            self.last.weight.copy_(u_out[:, :, None, None])
        else:
            core = torch.einsum("pq...,op->oq...", core, u_out)
        self.core.weight.copy_(core)

    def effective_weight(self) -> Tensor:
        """The single conv weight (O, I, kh, kw) this chain computes."""
        w = self.core.weight
        if self.has("first"):
            w = torch.einsum("pq...,qi->pi...", w, self.first.weight[:, :, 0, 0])
        if self.has("last"):
            w = torch.einsum("pq...,op->oq...", w, self.last.weight[:, :, 0, 0])
        return w

    def effective_bias(self) -> Tensor | None:
        """The bias of the single conv this chain computes."""
        return (self.last if self.has("last") else self.core).bias


class CPConv(Factorised):
    """1x1 -> kh x 1 depthwise -> 1 x kw depthwise -> 1x1; `ranks` = (R,)."""

    kind = "cp"
    first: nn.Conv2d
    vertical: nn.Conv2d
    horizontal: nn.Conv2d
    last: nn.Conv2d

    def __init__(self, spec: ConvSpec, ranks: tuple[int], **like: Any) -> None:
        (rank,) = check_ranks(self.kind, spec, ranks)
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
            spec.kernel_size,
            spec.stride,
            spec.padding,
            spec.dilation,
        )
        depthwise = {"groups": rank, "bias": False}
        layers = OrderedDict(
            first=_conv(spec.in_channels, rank, 1, like, bias=False),
            vertical=_conv(
                rank,
                rank,
                (kh, 1),
                like,
                stride=(sh, 1),
                padding=(ph, 0),
                dilation=(dh, 1),
                **depthwise,
            ),  # fmt: skip
            horizontal=_conv(
                rank,
                rank,
                (1, kw),
                like,
                stride=(1, sw),
                padding=(0, pw),
                dilation=(1, dw),
                **depthwise,
            ),  # fmt: skip
            last=_conv(rank, spec.out_channels, 1, like, bias=spec.bias),
        )
        super().__init__(layers, spec, (rank,))

    @torch.no_grad()
    def load_factors(self, out: Tensor, inp: Tensor, vertical: Tensor, horizontal: Tensor) -> None:
        """Set the weights from CP factors (O, R), (I, R), (kh, R), (kw, R)."""
        self.first.weight.copy_(inp.T[:, :, None, None])
        self.vertical.weight.copy_(vertical.T[:, None, :, None])
        self.horizontal.weight.copy_(horizontal.T[:, None, None, :])
        self.last.weight.copy_(out[:, :, None, None])

    def effective_weight(self) -> Tensor:
        """The single conv weight (O, I, kh, kw) this chain computes."""
        return torch.einsum(
            "or,ir,hr,wr->oihw",
            self.last.weight[:, :, 0, 0],
            self.first.weight[:, :, 0, 0].T,
            self.vertical.weight[:, 0, :, 0].T,
            self.horizontal.weight[:, 0, 0, :].T,
        )

    def effective_bias(self) -> Tensor | None:
        """The bias of the single conv this chain computes."""
        return self.last.bias


class LowRankLinear(Factorised):
    """in -> r -> out; `ranks` = (r,)."""

    kind = "svd"
    first: nn.Linear
    last: nn.Linear

    def __init__(self, spec: LinearSpec, ranks: tuple[int], **like: Any) -> None:
        (rank,) = check_ranks(self.kind, spec, ranks)
        layers = OrderedDict(
            first=nn.Linear(spec.in_features, rank, bias=False, **like),
            last=nn.Linear(rank, spec.out_features, bias=spec.bias, **like),
        )
        super().__init__(layers, spec, (rank,))

    @torch.no_grad()
    def load_factors(self, first: Tensor, last: Tensor) -> None:
        """Set the weights from a truncated SVD (`kdprune.decomposition.svd_factors`)."""
        self.first.weight.copy_(first)
        self.last.weight.copy_(last)

    def effective_weight(self) -> Tensor:
        """The single weight (out, in) this chain computes."""
        return self.last.weight @ self.first.weight

    def effective_bias(self) -> Tensor | None:
        """The bias of the single linear layer this chain computes."""
        return self.last.bias


# What a model file may name: the kinds it can rebuild (a file names a kind, never a class). Each
# is called with (spec, ranks, **like), its own constructor's signature, not Factorised's.
FACTORISED: dict[str, Callable[..., Factorised]] = {
    cls.kind: cls for cls in (Tucker2Conv, CPConv, LowRankLinear)
}
SPEC_OF_KIND: dict[str, type[ConvSpec] | type[LinearSpec]] = {
    "tucker2": ConvSpec,
    "cp": ConvSpec,
    "svd": LinearSpec,
}


def max_ranks(kind: str, spec: ConvSpec | LinearSpec) -> tuple[int, ...]:
    """The largest ranks a kind takes for a layer (CP has no upper bound that matters: 2**31)."""
    if kind == "tucker2" and isinstance(spec, ConvSpec):
        return spec.in_channels, spec.out_channels
    if kind == "svd" and isinstance(spec, LinearSpec):
        return (min(spec.in_features, spec.out_features),)
    if kind == "cp":
        return (2**31 - 1,)
    raise ConfigError(f"{kind} cannot replace a layer of spec {spec}.")


def check_ranks(kind: str, spec: Any, ranks: Any) -> tuple[int, ...]:
    """`ranks` as ints, or ConfigError unless they fit `kind` and the layer `spec`."""
    if not isinstance(spec, SPEC_OF_KIND[kind]):
        raise ConfigError(f"{kind} cannot replace a layer of spec {spec}.")
    limits = max_ranks(kind, spec)
    values = list(ranks) if isinstance(ranks, list | tuple) else [ranks]
    if len(values) != len(limits) or not all(
        isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= top
        for r, top in zip(values, limits, strict=True)
    ):
        raise ConfigError(f"{kind} ranks must be {len(limits)} ints in [1, {limits}], got {ranks}.")
    return tuple(values)


def factorised(kind: str, module: nn.Module, ranks: tuple[int, ...]) -> Factorised:
    """An untrained factorised stand-in for `module` (a layer or an earlier stand-in), on its
    device and in its dtype."""
    if kind not in FACTORISED:
        raise ConfigError(f"unknown decomposition {kind!r}; known: {', '.join(FACTORISED)}.")
    spec = layer_spec(module)
    weight = next(module.parameters())
    return FACTORISED[kind](spec, tuple(ranks), device=weight.device, dtype=weight.dtype)


def effective_weight(module: nn.Module) -> tuple[Tensor, Tensor | None]:
    """(weight, bias) of the single layer `module` computes: its own, or its stand-in's product."""
    if isinstance(module, Factorised):
        return module.effective_weight().detach(), module.effective_bias()
    weight, bias = module.weight, module.bias
    if not isinstance(weight, Tensor) or not (bias is None or isinstance(bias, Tensor)):
        raise ConfigError(f"{type(module).__name__} has no weight and bias to decompose.")
    return weight.detach(), bias


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    """Put `new` at module path `path` of `model`."""
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent), name, new)


def rebuild(model: nn.Module, step: dict[str, Any]) -> None:
    """Replay one decomposition step of a model file ({path, kind, ranks}): put an untrained
    stand-in of that kind and those ranks at `path` (its weights come from the state_dict)."""
    path, kind, ranks = str(step["path"]), str(step["kind"]), tuple(step["ranks"])
    try:
        module = model.get_submodule(path)
    except AttributeError:
        raise ConfigError(
            f"decomposition step names {path!r}, not a module of the model."
        ) from None
    replace_module(model, path, factorised(kind, module, ranks))
