"""Quantization as the last compression stage (the `quantize` group): INT8 after any order.

`ptq` is ONNX Runtime's static post-training quantization of the exported model, calibrated on
training images; `qat` is PyTorch's export-based quantization-aware training with the run's KD
objective. Both are measured in ONNX Runtime (accuracy, size, latency); `none` adds nothing.
"""

from kdprune.quantization.quantize_stages import (
    NoQuantization,
    PostTrainingQuantization,
    QuantizationAwareTraining,
)

__all__ = ["NoQuantization", "PostTrainingQuantization", "QuantizationAwareTraining"]
