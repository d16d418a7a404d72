"""Post-training static INT8 with ONNX Runtime's quantization tools, QDQ format.

Activations are uint8 and weights int8 (symmetric, per output channel when asked): the u8 x s8
pair is the one ONNX Runtime's x86 kernels run fastest (VNNI / AVX2); s8 x s8 and u8 x u8 fall
back to slower paths there. Activation ranges come from the calibration images only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kdprune.errors import ConfigError
from kdprune.quantization.calibration_images import CalibrationReader
from kdprune.quantization.files import CHECK_IMAGES, require_agreement
from kdprune.quantization.int8_kernels import resolve_kernel_path
from kdprune.quantization.onnx_graph import compact, require_int8, save, strip_debug_info

log = logging.getLogger("kdprune")

# ONNX Runtime's calibration methods a config may name (onnxruntime.quantization.CalibrationMethod).
CALIBRATION_METHODS = ("MinMax", "Percentile", "Entropy")


def ort_calibration_method(name: str) -> Any:
    """ONNX Runtime's CalibrationMethod of that name, or ConfigError listing the choices."""
    from onnxruntime.quantization import CalibrationMethod

    if name not in CALIBRATION_METHODS:
        raise ConfigError(
            f"quantize.calibration_method must be one of {', '.join(CALIBRATION_METHODS)}, "
            f"got {name!r}"
        )
    return CalibrationMethod[name]


def quantize_onnx(
    fp32: str | os.PathLike,
    out: str | os.PathLike,
    reader: CalibrationReader,
    method: str = "MinMax",
    per_channel: bool = True,
    percentile: float = 99.999,
    reduce_range: bool | None = None,
) -> Path:
    """Write the static INT8 (QDQ) version of the FP32 ONNX model `fp32` to `out`, atomically,
    calibrated on `reader`'s images, with 7-bit weights when `reduce_range` (the kernel path of a
    CPU without VNNI; None: this CPU's `auto` path); KdpruneError if any conv / linear stayed in
    float or ONNX Runtime's logits stray from the QDQ graph's own."""
    if reduce_range is None:
        reduce_range = resolve_kernel_path("auto").reduce_range
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="kdprune-ptq-") as folder:
        pre, quantized = Path(folder) / "pre.onnx", Path(folder) / "int8.onnx"
        # ONNX Runtime's recommended first step: shape inference and graph fusions in float (its
        # symbolic shape inference is for dynamic-length models; ONNX's own covers a batch axis).
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        with contextlib.redirect_stdout(io.StringIO()):  # histogram calibrators print
            quantize_static(
                str(pre),
                str(quantized),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=ort_calibration_method(method),
                reduce_range=reduce_range,
                extra_options={"CalibPercentile": float(percentile)},
            )
        model = strip_debug_info(quantized)
    layers = require_int8(model, "ONNX Runtime's static quantization")
    log.info("ptq: %d conv / linear layers in INT8 (%s calibration)", layers, method)
    model = compact(model)
    images = reader.images[:CHECK_IMAGES]
    require_agreement(model, images, qdq_reference(model, images), "the QDQ graph's in float", out)
    return save(model, out)


def qdq_reference(model: Any, inputs: np.ndarray) -> np.ndarray:
    """The logits of a QDQ model computed in float, as its nodes define them: ONNX Runtime with
    graph optimizations off runs each DequantizeLinear, then a float Conv / Gemm, instead of
    fusing them into the integer kernels whose agreement the caller checks."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(["logits"], {"input": inputs})[0]
