"""The ONNX files a quantization stage writes beside model.pt: the dense and compressed FP32
models (from their model files, checked against PyTorch) and the INT8 model."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdprune.errors import KdpruneError
from kdprune.export import export_module, export_onnx, logit_gap, ort_session
from kdprune.quantization.onnx_graph import compact, require_int8, save, strip_debug_info
from kdprune.quantization.tolerance import INT8_STEPS, int8_tolerance

log = logging.getLogger("kdprune")

DENSE_ONNX, FP32_ONNX, INT8_ONNX = "dense.onnx", "model.onnx", "model.int8.onnx"
CHECK_IMAGES = 64  # training images the INT8 logits are checked on


def export_fp32(model_file: str | os.PathLike, out: Path) -> Path:
    """A model file as an FP32 ONNX file (dynamic batch, checked against PyTorch by
    `export_onnx`), compacted like the INT8 file (`compact`), so their sizes compare."""
    export_onnx(model_file, out)
    return save(compact(out), out)


def fp32_files(model_file: str | os.PathLike, dense_file: str | os.PathLike) -> dict[str, Path]:
    """`dense.onnx` and `model.onnx` beside the model file."""
    folder = Path(model_file).parent
    return {
        "dense": export_fp32(dense_file, folder / DENSE_ONNX),
        "fp32": export_fp32(model_file, folder / FP32_ONNX),
    }


def export_int8_graph(graph: nn.Module, inputs: torch.Tensor, out: Path) -> Path:
    """Write a converted (quantize / dequantize) PyTorch graph as a QDQ ONNX file at `out`,
    atomically, once ONNX Runtime's logits on `inputs` agree with PyTorch's and every conv /
    linear layer holds int8 weights."""
    with tempfile.TemporaryDirectory(prefix="kdprune-int8-") as folder:
        tmp = Path(folder) / INT8_ONNX
        try:
            export_module(graph, inputs[:2], tmp, dynamic=True)
        except Exception as err:  # the exporter raises many types; all mean the same
            raise KdpruneError(f"ONNX export of the INT8 graph failed ({err}).") from err
        model = strip_debug_info(tmp)
    require_int8(model, "the PT2E quantizer")
    model = compact(model)
    with torch.inference_mode():
        expected = graph(inputs).float().numpy()
    require_agreement(model, inputs.numpy(), expected, "PyTorch's", out)
    return save(model, out)


def require_agreement(model, inputs: np.ndarray, expected: np.ndarray, what: str, out) -> None:
    """ONNX Runtime's logits of the INT8 `model` on `inputs` lie within `int8_tolerance` of
    `expected` (the float reference, named `what`); else KdpruneError (`out` was not written)."""
    with tempfile.TemporaryDirectory(prefix="kdprune-int8-") as folder:
        path = save(model, Path(folder) / INT8_ONNX)
        got = ort_session(path).run(["logits"], {"input": inputs})[0]
    diff = logit_gap(got, expected, 0.0)[0]  # its shape check and difference; the bound is ours
    allowed = int8_tolerance(model)
    if not diff <= allowed:
        raise KdpruneError(
            f"ONNX Runtime's INT8 logits differ from {what} by {diff:.3g} (allowed {allowed:.3g}, "
            f"{INT8_STEPS} activation steps through the classifier); {out} was not written."
        )
    log.info("int8 onnx check: max abs logit diff %.3g (allowed %.3g) on %d images",
             diff, allowed, len(inputs))  # fmt: skip
