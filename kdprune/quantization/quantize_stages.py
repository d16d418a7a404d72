"""The `quantize` stages, run after the order has written its FP32 model and ledger.

Each reads the compressed model through its model file (`kdprune.pruning.load_model`), writes
`dense.onnx`, `model.onnx` and `model.int8.onnx` beside it, and returns its ledger keys (see
`kdprune.quantization.quantize_ledger`). `check` runs before any training, on a fresh model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from kdprune.engine import fit
from kdprune.errors import ConfigError
from kdprune.export import ort_session
from kdprune.models.common import example_inputs
from kdprune.pruning import load_model
from kdprune.quantization.calibration_images import CalibrationReader, training_images
from kdprune.quantization.files import CHECK_IMAGES, INT8_ONNX, export_int8_graph, fp32_files
from kdprune.quantization.int8_kernels import (
    KernelPath,
    cpu_flags,
    int8_support,
    require_int8_cpu,
    resolve_kernel_path,
    speed_note,
)
from kdprune.quantization.onnx_graph import layer_precision
from kdprune.quantization.onnx_ptq import ort_calibration_method, quantize_onnx
from kdprune.quantization.pt2e_qat import QatModel, export_graph, prepare, unquantized_layers
from kdprune.quantization.quantize_ledger import accuracy_record, latency_record, size_record
from kdprune.schedules.context import RunContext
from kdprune.schedules.stages import objective
from kdprune.schedules.teacher_stage import Teacher

log = logging.getLogger("kdprune")

QAT_SEED_OFFSET = 7  # ctx.seed offset of the QAT stage (the orders use small ones)


class NoQuantization:
    """`quantize=none`: the run ends with the FP32 compressed model; the ledger gains nothing."""

    def __call__(self, **_: Any) -> dict[str, Any]:
        return {}


class PostTrainingQuantization:
    """`quantize=ptq`: ONNX Runtime's static INT8 (QDQ) of the exported compressed model,
    activations calibrated on `calibration_images` training images."""

    def __init__(
        self,
        calibration_images: int = 1024,
        calibration_method: str = "MinMax",
        percentile: float = 99.999,
        per_channel: bool = True,
        int8_kernel_path: str = "auto",
    ):
        if isinstance(calibration_images, bool) or not isinstance(calibration_images, int):
            raise ConfigError(
                f"quantize.calibration_images must be a whole number, got {calibration_images!r}"
            )
        if calibration_images < 1:
            raise ConfigError(
                f"quantize.calibration_images must be at least 1 (training images that set the "
                f"activation ranges), got {calibration_images}"
            )
        if isinstance(percentile, bool) or not isinstance(percentile, int | float):
            raise ConfigError(f"quantize.percentile must be a number, got {percentile!r}")
        if not 0 < percentile <= 100:
            raise ConfigError(f"quantize.percentile must lie in (0, 100], got {percentile!r}")
        if not isinstance(per_channel, bool):
            raise ConfigError(f"quantize.per_channel must be true or false, got {per_channel!r}")
        ort_calibration_method(calibration_method)  # ConfigError for a name it does not have
        self.images, self.method = calibration_images, calibration_method
        self.percentile, self.per_channel = float(percentile), per_channel
        self.path = resolve_kernel_path(int8_kernel_path)

    def check(self, model: nn.Module, example: torch.Tensor) -> None:
        """INT8 runs on this CPU, and the model exports (torch.export, as the ONNX exporter)."""
        require_int8_cpu()
        export_graph(model.eval(), example)

    def __call__(
        self, *, ctx: RunContext, model_file: str | os.PathLike, dense_file: str | os.PathLike,
        **_: Any,
    ) -> dict[str, Any]:  # fmt: skip
        with ctx.timed("quantize"):
            files = fp32_files(model_file, dense_file)
            images = training_images(ctx.loaders.train, self.images, int(ctx.cfg.seed))
            files["int8"] = quantize_onnx(
                files["fp32"], Path(model_file).parent / INT8_ONNX, CalibrationReader(images),
                self.method, self.per_channel, self.percentile, self.path.reduce_range,
            )  # fmt: skip
            record = measure(ctx, files, self.path)
        return {
            "quantize": "ptq",
            "calibration_images": len(images),
            "calibration_method": self.method,
            **record,
        }


class QuantizationAwareTraining:
    """`quantize=qat`: PT2E quantization-aware training with the run's KD objective for
    `epochs` epochs (taken from the order's last stage), converted and exported to ONNX."""

    def __init__(self, epochs: int = 1, lr_scale: float = 0.1, int8_kernel_path: str = "auto"):
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(
                f"quantize=qat needs quantize.epochs >= 1 (its training epochs), got {epochs!r}; "
                "quantize=ptq quantizes without training"
            )
        if isinstance(lr_scale, bool) or not isinstance(lr_scale, int | float) or lr_scale <= 0:
            raise ConfigError(f"quantize.lr_scale must be a number > 0, got {lr_scale!r}")
        self.epochs, self.lr_scale = epochs, float(lr_scale)
        self.path = resolve_kernel_path(int8_kernel_path)

    def check(self, model: nn.Module, example: torch.Tensor) -> None:
        """INT8 runs on this CPU, and the x86 quantizer puts every conv / linear weight in INT8."""
        require_int8_cpu()
        missed = unquantized_layers(prepare(model, example, False, self.weight_range))
        if missed:
            raise ConfigError(
                f"the PT2E x86 quantizer leaves {len(missed)} conv / linear layer(s) of "
                f"{type(model).__name__} in float ({', '.join(missed[:3])}); use quantize=ptq"
            )

    def __call__(
        self, *, ctx: RunContext, teacher: Teacher | None, model_file: str | os.PathLike,
        dense_file: str | os.PathLike, **_: Any,
    ) -> dict[str, Any]:  # fmt: skip
        with ctx.timed("quantize"):
            files = fp32_files(model_file, dense_file)
        qat = self.train(ctx, teacher, load_model(model_file, map_location=ctx.device))
        with ctx.timed("quantize"):
            graph = qat.cpu().convert()
            images = training_images(ctx.loaders.train, CHECK_IMAGES, int(ctx.cfg.seed))
            files["int8"] = export_int8_graph(graph, images, Path(model_file).parent / INT8_ONNX)
            record = measure(ctx, files, self.path)
        return {"quantize": "qat", "qat_epochs": self.epochs, **record}

    @property
    def weight_range(self) -> tuple[int, int]:
        """The int8 weight range of the kernel path, for torchao's quantizer."""
        return self.path.weight_min, self.path.weight_max

    def train(self, ctx: RunContext, teacher: Teacher | None, model: nn.Module) -> QatModel:
        """The model prepared for QAT and trained with the run's objective (stage `qat`)."""
        example = example_inputs(ctx.cfg.dataset, batch=2, device=ctx.device)
        ctx.seed(QAT_SEED_OFFSET)
        qat = QatModel(prepare(model, example, True, self.weight_range)).to(ctx.device)
        # Two mappings merge into a DictConfig (OmegaConf annotates any container).
        optimizer = cast(
            DictConfig,
            OmegaConf.merge(ctx.cfg.optimizer, {"lr": float(ctx.cfg.optimizer.lr) * self.lr_scale}),
        )
        stage = ctx.stage("qat", self.epochs, objective(ctx, qat, teacher), optimizer=optimizer)
        with ctx.timed("qat"):
            fit(qat, ctx.loaders.train, ctx.loaders.val, stage)
        return qat


def measure(ctx: RunContext, files: dict[str, Path], path: KernelPath) -> dict[str, Any]:
    """The INT8 model's accuracy, and sizes and latencies of the three ONNX files."""
    cfg, d = ctx.cfg, ctx.cfg.dataset
    session = ort_session(files["int8"], int(cfg.trainer.get("threads") or 0))
    shape = (int(d.in_channels), int(d.image_size), int(d.image_size))
    record = {
        "int8_layers": len(layer_precision(files["int8"])["int8"]),
        "int8_instructions": int8_support(cpu_flags()),
        "int8_kernel_path": path.name,
        **accuracy_record(session, ctx.loaders, cfg.trainer.max_batches),
        **size_record(files),
        **latency_record(files, shape, cfg.measure),
    }
    log.info(
        "int8: test acc %.4f, file %.1fx smaller than FP32, speed-up %.2fx at batch 64 (ORT)",
        record["int8_test_acc"],
        record["int8_size_reduction"],
        record["int8_speedup_bs64"],
    )
    if note := speed_note(record["int8_instructions"]):
        log.warning("int8: %s", note)
    return record
