"""Per-example test predictions of a run: `test_predictions.npy` beside its metrics.json.

One predicted class per test image, in the test split's order (which is the same for every run of a
data set: see `kdprune.data.datasets`), as the smallest unsigned NumPy integer type that holds the
number of classes (uint8 up to 255 classes, else uint16); images that were not evaluated
(`trainer.max_batches`) hold the type's largest value. metrics.json names the file under
`test_predictions_file`, so paired analyses over test images (McNemar, a bootstrap over seeds x
images) can read two runs' predictions image by image.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

from kdprune.results import atomic_write

PREDICTIONS_FILE = "test_predictions.npy"


def prediction_dtype(num_classes: int) -> np.dtype:
    """The smallest unsigned type holding every class index and one 'not evaluated' value."""
    return np.dtype(np.uint8) if num_classes < 255 else np.dtype(np.uint16)


def write_predictions(
    run_dir: str | os.PathLike, predictions: torch.Tensor, num_classes: int
) -> Path:
    """Write a run's test predictions (class index per image, -1: not evaluated) atomically."""
    dtype = prediction_dtype(num_classes)
    values = predictions.cpu().numpy()
    out = np.where(values < 0, np.iinfo(dtype).max, values).astype(dtype)
    buffer = io.BytesIO()
    np.save(buffer, out, allow_pickle=False)
    return atomic_write(Path(run_dir) / PREDICTIONS_FILE, lambda fh: fh.write(buffer.getvalue()))


def read_predictions(path: str | os.PathLike) -> np.ndarray:
    """A run's test predictions (given the file or its run folder), as saved."""
    path = Path(path)
    if path.is_dir():
        path = path / PREDICTIONS_FILE
    return np.load(path, allow_pickle=False)
