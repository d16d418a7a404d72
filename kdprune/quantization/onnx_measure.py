"""ONNX models measured in ONNX Runtime: accuracy on a split, latency per batch, file size."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kdprune.export import ort_session


def ort_evaluate(session: Any, loader, max_batches: int | None = None) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy of an ONNX Runtime session on a loader's batches
    (the same batches, in the same order, as `kdprune.engine.evaluate` sees)."""
    loss_sum, correct, seen = 0.0, 0, 0
    for b, (x, y, _) in enumerate(loader):
        if max_batches is not None and b >= max_batches:
            break
        logits = torch.from_numpy(session.run(["logits"], {"input": x.cpu().numpy()})[0])
        y = y.cpu()
        loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
    return {"acc": correct / max(seen, 1), "loss": loss_sum / max(seen, 1)}


def ort_latency_ms(
    paths: Mapping[str, str | os.PathLike],
    input_shape: Sequence[int],
    batch_size: int,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
) -> dict[str, float]:
    """Median milliseconds per run of a batch of `input_shape` (C, H, W) for each ONNX model in
    `paths` (by name), in ONNX Runtime with `threads` intra-op threads (None: its default), after
    `warmup` runs each. The models run interleaved (A, B, A, B, ...), so a neighbour's load on a
    shared CPU falls on all of them alike."""
    sessions = {name: ort_session(path, threads or 0) for name, path in paths.items()}
    feed = {"input": np.random.default_rng(0).standard_normal((batch_size, *input_shape), "f4")}
    for session in sessions.values():
        for _ in range(warmup):
            session.run(["logits"], feed)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(repeats):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(["logits"], feed)
            times[name].append(time.perf_counter() - start)
    return {name: 1000.0 * statistics.median(t) for name, t in times.items()}


def evaluate_onnx_file(
    path: str | os.PathLike, loader, threads: int = 0
) -> tuple[dict[str, float], str]:
    """Accuracy and loss of an ONNX file (`kdprune evaluate model.int8.onnx`) on a loader, and
    a few words on what it is (its INT8 layers and size); KdpruneError if it cannot be read."""
    from kdprune.errors import KdpruneError
    from kdprune.quantization.onnx_graph import layer_precision

    try:
        session = ort_session(path, threads)
    except Exception as err:  # ONNX Runtime raises its own types for unreadable files
        raise KdpruneError(f"{path} is not an ONNX model ONNX Runtime can load ({err}).") from None
    try:
        result = ort_evaluate(session, loader)
    except Exception as err:  # a wrong input shape: ONNX Runtime's own InvalidArgument type
        raise ValueError(str(err).strip().splitlines()[0].split(" : ")[-1]) from None
    layers = layer_precision(path)
    return result, (
        f"ONNX Runtime, {len(layers['int8'])} INT8 / {len(layers['float'])} float conv or "
        f"linear layers, {os.path.getsize(path)} bytes"
    )
