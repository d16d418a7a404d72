"""The ONNX files a quantization stage writes beside model.pt: the dense and compressed FP32
models (from their model files, checked against PyTorch) and the INT8 model."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from kdprune.errors import KdpruneError
from kdprune.export import export_module, export_onnx, logit_gap, ort_session
from kdprune.quantization.onnx_graph import compact, require_int8, save, strip_debug_info

log = logging.getLogger("kdprune")

DENSE_ONNX, FP32_ONNX, INT8_ONNX = "dense.onnx", "model.onnx", "model.int8.onnx"
# INT8 and its float reference round differently; logits may differ by a few quantization steps.
INT8_TOLERANCE = 0.1


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
    diff, allowed = _int8_logit_gap(model, graph, inputs)
    if not diff <= allowed:
        raise KdpruneError(
            f"ONNX Runtime's INT8 logits differ from PyTorch's by {diff:.3g} (allowed "
            f"{allowed:.3g}); {out} was not written."
        )
    log.info("int8 onnx check: max abs logit diff %.3g on %d images", diff, len(inputs))
    return save(model, out)


def _int8_logit_gap(model, graph: nn.Module, inputs: torch.Tensor) -> tuple[float, float]:
    """`logit_gap` of the INT8 ONNX `model` against the converted PT2E `graph` (which has no
    `.eval()`, so `onnx_logit_gap` does not fit)."""
    with tempfile.TemporaryDirectory(prefix="kdprune-int8-") as folder:
        path = save(model, Path(folder) / INT8_ONNX)
        got = ort_session(path).run(["logits"], {"input": inputs.numpy()})[0]
    with torch.inference_mode():
        expected = graph(inputs).float().numpy()
    return logit_gap(got, expected, INT8_TOLERANCE)
