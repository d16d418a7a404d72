"""How far ONNX Runtime's INT8 logits may lie from their float reference, read from the INT8
graph's own quantization scales.

The reference is the quantized graph computed in float: PyTorch's converted PT2E graph (`qat`),
or the QDQ file run by ONNX Runtime with its graph optimizations off (`ptq`), where every
DequantizeLinear feeds a float Conv / Gemm. Both use the same integer weights and quantize every
activation to the same grid as the integer kernels do. They differ from the integer kernels only
in float rounding (the requantization scale in float32 or fixed point, the order of a float
sum), and that moves a quantized activation by one step at most, and only when it lies next to a
rounding boundary. Such a flip propagates to the classifier's input as a few steps there, so the
allowed gap is what `INT8_STEPS` steps of every classifier input can do to a logit:

    allowed = INT8_STEPS * s_x * max_j sum_i |W_ji| + s_y

with s_x the scale of the classifier's input activation, W its dequantized weights (row j gives
logit j) and s_y the scale of its quantized output (one step of rounding; 0 when the logits are
float). Every input moving the worst way at once is far more than rounding does, and far less
than a saturated kernel: a vpmaddubsw pair that saturates loses up to 32003 units of s_x * s_w,
which is what this check exists to catch (see kdprune.quantization.int8_kernels).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdprune.errors import KdpruneError

INT8_STEPS = 2  # activation steps each classifier input may be off by (see above)
WEIGHTED = ("Gemm", "MatMul", "Conv")
PASS_THROUGH = ("Reshape", "Flatten", "Identity", "Add", "Squeeze")  # keep the logits' error


def _dequantize(node: Any, init: dict[str, np.ndarray]) -> np.ndarray:
    """The float value a DequantizeLinear of initializers gives: (q - zero point) * scale,
    per channel along its `axis`."""
    q = init[node.input[0]].astype(np.float64)
    scale = init[node.input[1]].astype(np.float64)
    zero = init[node.input[2]].astype(np.float64) if len(node.input) > 2 else np.zeros(1)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (q - zero) * scale


def _classifier(graph: Any) -> tuple[Any, float]:
    """The conv / linear node that computes the logits, and the step of its quantized output
    (0.0 when the logits come out in float)."""
    producers = {out: node for node in graph.node for out in node.output}
    init = {t.name for t in graph.initializer}
    node, step = producers.get("logits"), 0.0
    while node is not None and node.op_type not in WEIGHTED:
        if node.op_type == "DequantizeLinear" and not step:
            step = float(_initializers(graph, [node.input[1]])[0].max())
        elif node.op_type not in ("QuantizeLinear", "DequantizeLinear", *PASS_THROUGH):
            break
        inputs = [name for name in node.input if name not in init]
        node = producers.get(inputs[0]) if inputs else None
    if node is None or node.op_type not in WEIGHTED:
        raise KdpruneError("the INT8 graph's logits do not come from a conv or linear layer.")
    return node, step


def _initializers(graph: Any, names: list[str]) -> list[np.ndarray]:
    from onnx import numpy_helper

    found = {t.name: t for t in graph.initializer if t.name in names}
    return [numpy_helper.to_array(found[name]) for name in names]


def int8_tolerance(model: Any) -> float:
    """The largest INT8-vs-reference logit gap the INT8 ONNX `model` (QDQ) may show: see the
    module docstring for the derivation."""
    graph = model.graph
    node, out_step = _classifier(graph)
    producers = {out: n for n in graph.node for out in n.output}
    x, w = producers.get(node.input[0]), producers.get(node.input[1])
    if x is None or w is None or "DequantizeLinear" != x.op_type or w.op_type != x.op_type:
        raise KdpruneError("the INT8 graph's classifier has no quantized input and weights.")
    names = [x.input[1], *(n for n in w.input if n)]
    init = dict(zip(names, _initializers(graph, names), strict=True))
    in_step = float(init[x.input[1]].max())
    weight = _dequantize(w, init)
    if node.op_type == "MatMul" or (
        node.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in node.attribute)
    ):
        weight = weight.T  # (inputs, outputs) -> one row per logit
    rows = weight.reshape(weight.shape[0], -1)
    return INT8_STEPS * in_step * float(np.abs(rows).sum(axis=1).max()) + out_step
