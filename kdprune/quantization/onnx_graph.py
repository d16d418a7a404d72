"""ONNX graphs of quantized models: what is INT8 in them, debug metadata stripped, atomic saving.

A conv or linear layer counts as INT8 when its weight input comes from a DequantizeLinear of an
8-bit integer initializer (QDQ format), or when the layer is itself a QLinear* / *Integer node.
A quantizer that silently left every layer in float is a known pitfall of the PT2E flow: callers
check `float_layers` is empty before writing a model.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from kdprune.errors import KdpruneError
from kdprune.results import atomic_write

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
INTEGER_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm")
INT8_TYPES = (2, 3)  # onnx.TensorProto.UINT8, INT8


def _load(model: Any) -> Any:
    import onnx

    return model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))


def strip_debug_info(model: Any) -> Any:
    """Drop what the exporter records for debugging (per-node stack traces with local paths,
    FX node text, name scopes; doc strings): a deployed file needs none of it, and it would make
    file sizes measure metadata. Returns the model, changed in place."""
    model = _load(model)
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    model.graph.doc_string = ""
    return model


def compact(model: Any) -> Any:
    """`strip_debug_info`, then what a runtime re-derives or never reads: the shape hints of
    intermediate tensors (value_info), node names, and the long names of internal tensors
    (`relu_1_QuantizeLinear_Output`, `fc1.weight_zero_point`, ...), which become short ids. The
    graph's `input` and `logits` keep their names. Applied alike to the FP32 and INT8 files, so
    their sizes compare weights and graph, not naming. Returns the model, changed in place."""
    model = strip_debug_info(model)
    graph = model.graph
    del graph.value_info[:]
    kept = {v.name for v in [*graph.input, *graph.output]} | {""}
    short: dict[str, str] = {}

    def rename(name: str) -> str:
        return name if name in kept else short.setdefault(name, f"v{len(short):x}")

    for node in graph.node:
        node.name = ""
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
    for tensor in graph.initializer:
        tensor.name = rename(tensor.name)
    return model


def _weight_is_int8(model: Any, name: str, producers: dict[str, Any]) -> bool:
    """Whether tensor `name` is a DequantizeLinear of an 8-bit integer initializer."""
    node = producers.get(name)
    if node is None or node.op_type != "DequantizeLinear":
        return False
    initializers = {i.name: i for i in model.graph.initializer}
    source = initializers.get(node.input[0])
    return source is not None and source.data_type in INT8_TYPES


def layer_precision(model: Any) -> dict[str, list[str]]:
    """{"int8": [...], "float": [...]}: the graph's conv / linear nodes by whether their weights
    are 8-bit integers (QDQ or integer operators)."""
    model = _load(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    out: dict[str, list[str]] = {"int8": [], "float": []}
    for node in model.graph.node:
        if node.op_type in INTEGER_OPS:
            out["int8"].append(node.name)
        elif node.op_type in WEIGHTED_OPS and len(node.input) > 1:
            key = "int8" if _weight_is_int8(model, node.input[1], producers) else "float"
            out[key].append(node.name)
    return out


def require_int8(model: Any, what: str) -> int:
    """The number of INT8 conv / linear layers; KdpruneError when any is left in float (or the
    graph has none), naming them."""
    layers = layer_precision(model)
    if layers["float"] or not layers["int8"]:
        names = ", ".join(layers["float"][:5]) or "no conv or linear layer at all"
        raise KdpruneError(
            f"{what} left {len(layers['float'])} of {len(layers['float']) + len(layers['int8'])} "
            f"conv / linear layers in float ({names}): the quantizer did not handle them."
        )
    return len(layers["int8"])


def op_counts(model: Any) -> dict[str, int]:
    """How many nodes of each operator type the graph holds."""
    return dict(Counter(node.op_type for node in _load(model).graph.node))


def save(model: Any, path: str | os.PathLike) -> Path:
    """Write an ONNX model as one file, atomically."""
    data = model.SerializeToString()
    return atomic_write(path, lambda fh: fh.write(data))
