"""ONNX export of kdprune model files, checked against PyTorch with ONNX Runtime.

The exported graph takes `input` (float32 [batch, C, H, W]) and returns `logits` ([batch,
classes]). It comes from the torch.export-based exporter (the default since PyTorch 2.9; the
TorchScript one is deprecated), which needs the `onnx` and `onnxscript` packages.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdprune.errors import KdpruneError
from kdprune.pruning.io import load_model, read_model_file

log = logging.getLogger("kdprune")

# The exporter writes opset 18 natively; asking it for 17 leaves models with pooling at 18 (its
# down-converter cannot move ReduceMean's axes back to an attribute), so 18 is what it can promise.
DEFAULT_OPSET = 18


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:  # a dependency since the export command exists; old envs lack it
        raise KdpruneError(
            "ONNX export needs onnx, onnxscript and onnxruntime: pip install onnx onnxscript "
            "onnxruntime"
        ) from err
    return onnxruntime


def model_input_shape(payload: dict[str, Any]) -> list[int]:
    """The (C, H, W) input of a model file's dict: its recorded shape, else its model config's."""
    if payload.get("input_shape"):
        return [int(n) for n in payload["input_shape"][1:]]
    cfg = payload["model_cfg"]
    if "in_channels" in cfg and "image_size" in cfg:
        return [int(cfg["in_channels"]), int(cfg["image_size"]), int(cfg["image_size"])]
    raise KdpruneError("the model file does not record its input size; pass input_shape=(C, H, W).")


def ort_session(path: str | os.PathLike, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session for `path` with `threads` intra-op threads, one inter-op."""
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def logit_gap(got: np.ndarray, expected: np.ndarray, tolerance: float) -> tuple[float, float]:
    """(largest |ONNX Runtime − PyTorch| output difference, the largest a check allows:
    `tolerance` times max(1, largest |PyTorch logit|))."""
    if got.shape != expected.shape:
        raise KdpruneError(
            f"ONNX output shape {got.shape} differs from PyTorch's {expected.shape}."
        )
    allowed = tolerance * max(1.0, float(np.abs(expected).max()))
    return float(np.abs(got - expected).max()), allowed


@torch.inference_mode()
def onnx_logit_gap(
    path: str | os.PathLike, model: nn.Module, inputs: torch.Tensor, tolerance: float
) -> tuple[float, float]:
    """`logit_gap` of the ONNX file at `path` against `model` on `inputs`."""
    expected = model.eval()(inputs).float().numpy()
    got = ort_session(path).run(["logits"], {"input": inputs.numpy()})[0]
    return logit_gap(got, expected, tolerance)


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Any:
    """Raise these loggers to WARNING for the block; restore their levels after."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_module(
    model: nn.Module,
    example: torch.Tensor,
    path: str | os.PathLike,
    dynamic: bool = False,
    opset: int | None = DEFAULT_OPSET,
) -> None:
    """Write `model` traced on `example` to ONNX at `path` (input `input`, output `logits`),
    unchecked: `export_onnx` is the checked, atomic export of a model file."""
    import onnx

    # The exporter prints its progress, and its optimiser logs each pass at INFO.
    with contextlib.redirect_stdout(io.StringIO()), _quiet_loggers("onnxscript", "onnx_ir"):
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},) if dynamic else None,
            opset_version=opset,
            external_data=False,  # one self-contained file (classifiers stay far under 2 GB)
        )
    written = onnx.load(str(path), load_external_data=False)
    version = next((o.version for o in written.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and version != opset:
        raise KdpruneError(f"the exporter wrote opset {version}, not the {opset} asked for.")


def export_onnx(
    model_file: str | os.PathLike,
    out: str | os.PathLike,
    batch_size: int | None = None,
    opset: int | None = DEFAULT_OPSET,
    *,
    input_shape: Sequence[int] | None = None,
    tolerance: float = 1e-4,
) -> Path:
    """Export a kdprune model file to ONNX at `out`, checked with ONNX Runtime; return the path.

    `batch_size=None` gives a dynamic batch axis (checked at two batch sizes), an int a fixed one.
    The file is written atomically, and only if ONNX Runtime's outputs on random inputs match
    PyTorch's within `tolerance` times max(1, largest |logit|); else KdpruneError. `opset=None`
    takes the exporter's default. `input_shape` (C, H, W) is needed only when the file lacks it.
    """
    if batch_size is not None and batch_size < 1:
        raise KdpruneError(f"batch_size must be >= 1 or None (dynamic), got {batch_size}.")
    _import_onnxruntime()
    model = load_model(model_file)
    shape = list(input_shape) if input_shape else model_input_shape(read_model_file(model_file))
    # A dynamic axis needs an example batch above 1 (a batch of 1 would be specialised).
    example = torch.randn(batch_size or 2, *shape)
    checks = [example] if batch_size else [example, torch.randn(3, *shape)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp.onnx")
    os.close(fd)
    tmp = Path(name)
    try:
        try:
            export_module(model, example, tmp, dynamic=batch_size is None, opset=opset)
        except KdpruneError:
            raise
        except Exception as err:  # the exporter raises many types; all mean the same to a user
            raise KdpruneError(f"ONNX export of {model_file} failed ({err}).") from err
        for inputs in checks:
            diff, allowed = onnx_logit_gap(tmp, model, inputs, tolerance)
            if not diff <= allowed:
                raise KdpruneError(
                    f"ONNX Runtime's outputs differ from PyTorch's by {diff:.3g} on a batch of "
                    f"{len(inputs)} (allowed {allowed:.3g}); the file was not written."
                )
            log.info("onnx check: batch %d, max abs diff %.3g", len(inputs), diff)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
