"""Calibration data for post-training quantization: images of the TRAINING split only.

Validation selects and test reports; neither may shape the INT8 model, so activation ranges are
calibrated on a seeded random choice of training images, unaugmented (as the deployed model sees
its inputs).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from kdprune.errors import ConfigError


def training_images(train_loader, count: int, seed: int) -> torch.Tensor:
    """`count` images (all, if fewer) drawn without replacement from the training loader's split,
    in a seeded order, on the CPU, without the loader's augmentation."""
    if count < 1:
        raise ConfigError(f"quantize.calibration_images must be at least 1, got {count}")
    dataset: Any = getattr(train_loader, "dataset", None)
    n = len(train_loader.labels) if hasattr(train_loader, "images") else len(dataset)
    generator = torch.Generator().manual_seed(int(seed))
    chosen = torch.randperm(n, generator=generator)[: min(count, n)]
    if hasattr(train_loader, "images"):  # in memory (TensorLoader)
        return train_loader.images[chosen.to(train_loader.images.device)].cpu()
    return torch.stack([dataset[int(i)][0] for i in chosen])  # streamed (StreamLoader)


class CalibrationReader:
    """ONNX Runtime's CalibrationDataReader over fixed images, `batch_size` at a time, feeding
    the model input `input`; `rewind()` starts again (ONNX Runtime reads it once per pass)."""

    def __init__(self, images: torch.Tensor, batch_size: int = 64, input_name: str = "input"):
        self.images = images.float().numpy()
        self.batch_size = batch_size
        self.input_name = input_name
        self._batches: Iterator[np.ndarray] = iter(())
        self.rewind()

    def rewind(self) -> None:
        """Start again from the first batch."""
        self._batches = (
            self.images[i : i + self.batch_size]
            for i in range(0, len(self.images), self.batch_size)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch as {input name: array}, or None when all were read."""
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}
