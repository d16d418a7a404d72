"""Quantization-aware training through PyTorch's export-based flow (torchao's PT2E).

torch.export captures the model, `prepare_qat_pt2e` with the x86 quantizer inserts fake
quantization (uint8 activations, int8 per-channel weights, conv + BN folded the QAT way), the
model trains, and `convert_pt2e` turns it into a graph of quantize / dequantize ops with int8
weights, which the ONNX exporter writes as QuantizeLinear / DequantizeLinear.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from kdprune.errors import ConfigError

BATCH = torch.export.Dim("batch")


@contextlib.contextmanager
def _quiet(logger_name: str, stderr: bool = False) -> Iterator[None]:
    """Only critical messages from a logger (and none on stderr when asked) for the block; its
    level restored after."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stderr(io.StringIO()) if stderr else contextlib.nullcontext():
            yield
    finally:
        logger.setLevel(level)


def _pt2e():
    # torchao registers an Enum with torch's pytree on import, and torch warns about it on stderr:
    # keep that line out of a run's output and out of one-line error reports.
    with _quiet("torch.utils._pytree"):
        import torchao.quantization.pt2e as pt2e
        import torchao.quantization.pt2e.quantize_pt2e as flow
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    return pt2e, flow, x86


def split_shared_calls(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Give each call of a module used twice (one ReLU for two activations, as in torchvision's
    ResNets) its own name in the exported graph's module stack. The quantizer groups nodes into
    partitions by that name, and a partition with two outputs makes it raise."""
    for node in graph.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if not stack:
            continue
        key, (path, kind) = list(stack.items())[-1]
        if "@" in key:  # torch.export marks a module's second, third ... call `path@1`, `@2`
            stack[key] = (f"{path}@{key.rsplit('@', 1)[1]}", kind)
    return graph


def export_graph(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """torch.export of `model` in its current mode with a dynamic batch axis, as a GraphModule;
    ConfigError (one line) when the model cannot be exported."""
    try:
        # On failure torch.export prints the graph to stderr and logs warnings there.
        with _quiet("torch", stderr=True):
            exported = torch.export.export(model, (example,), dynamic_shapes=({0: BATCH},))
    except Exception as err:  # torch.export raises many types; all mean "not exportable"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"{type(model).__name__} cannot be captured by torch.export, which quantization "
            f"needs ({first})"
        ) from None
    return split_shared_calls(exported.module())


def quantization_config(qat: bool, weight_range: tuple[int, int] = (-128, 127)) -> Any:
    """torchao's default x86 quantization config with int8 weights limited to `weight_range`
    (the kernel path's: 7-bit weights where the CPU lacks VNNI, see
    kdprune.quantization.int8_kernels). torchao's own `reduce_range` makes activations 7-bit
    instead, which ONNX cannot carry: its QuantizeLinear clamps to [0, 255], so ONNX Runtime would
    see activations PyTorch clamped."""
    _, _, x86 = _pt2e()
    config = x86.get_default_x86_inductor_quantization_config(is_qat=qat)
    low, high = weight_range
    weight = dataclasses.replace(config.weight, quant_min=low, quant_max=high)
    return dataclasses.replace(config, weight=weight)


def prepare(
    model: nn.Module,
    example: torch.Tensor,
    qat: bool = True,
    weight_range: tuple[int, int] = (-128, 127),
) -> torch.fx.GraphModule:
    """The model exported and prepared by the x86 quantizer (int8 weights in `weight_range`):
    with fake quantization for training (`qat`), else with observers (the cheaper form `check`
    inspects: the same annotation of conv / linear layers, without rewriting conv + BN)."""
    _, flow, x86 = _pt2e()
    graph = export_graph(model.train(qat), example)
    quantizer = x86.X86InductorQuantizer().set_global(quantization_config(qat, weight_range))
    return (flow.prepare_qat_pt2e if qat else flow.prepare_pt2e)(graph, quantizer)


def unquantized_layers(prepared: torch.fx.GraphModule) -> list[str]:
    """The conv / linear calls of a prepared graph whose weight gets no observer or fake
    quantization (module paths): what the quantizer would silently leave in float."""
    _pt2e()
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase
    from torchao.quantization.pt2e.observer import ObserverBase

    names = []
    for node in prepared.graph.nodes:
        if node.op != "call_function" or not str(node.target).startswith(
            ("aten.conv", "aten.linear")
        ):
            continue
        weight = node.args[1]
        module = getattr(prepared, str(weight.target), None) if weight.op == "call_module" else None
        if not isinstance(module, FakeQuantizeBase | ObserverBase):
            stack = node.meta.get("nn_module_stack") or {"": (node.name, None)}
            names.append(list(stack.values())[-1][0])
    return names


class QatModel(nn.Module):
    """A prepared QAT graph that trains like any model: `train()` / `eval()` switch its batch
    norms, and the fake-quantization observers learn ranges in train mode only (so evaluating
    on validation data never moves them)."""

    def __init__(self, prepared: torch.fx.GraphModule):
        super().__init__()
        self.graph = prepared
        # Switching modes rewrites batch-norm and dropout patterns (slow); a graph without them
        # behaves the same in both.
        self.has_modes = any(
            "batch_norm" in str(node.target) or "dropout" in str(node.target)
            for node in prepared.graph.nodes
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)

    def train(self, mode: bool = True) -> QatModel:
        pt2e, _, _ = _pt2e()
        from torchao.quantization.pt2e.fake_quantize import disable_observer, enable_observer

        self.training = mode
        if self.has_modes:
            move = pt2e.move_exported_model_to_train if mode else pt2e.move_exported_model_to_eval
            move(self.graph)
        self.graph.apply(enable_observer if mode else disable_observer)
        return self

    def convert(self) -> torch.fx.GraphModule:
        """The INT8 graph (quantize / dequantize ops around float ops, int8 weights)."""
        _, flow, _ = _pt2e()
        self.eval()
        graph = flow.convert_pt2e(self.graph)
        for module in graph.modules():  # an exported graph refuses .eval(); the exporter asks
            module.training = False
        return graph
