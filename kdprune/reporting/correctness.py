"""Per-image correctness of every configuration at every seed: each run's saved test predictions
(`kdprune.predictions`) against the test labels of the data set it used. What the seeds × images
interval and McNemar's test (`image_noise`) read.

Labels are not saved per run: they come from the data set the run's resolved config names
(metrics.json `config.dataset.splits`, built with kdprune's whitelisted `instantiate`), loaded
once per data set within one report (`LabelCache`, made by the caller: no state outlives it).
The test split depends on neither `split_seed` nor `val_size` (kdprune.data.datasets), so every
seed's runs share one load. Why not a labels file per run: the runs written since predictions
are saved have none, and every one of them must keep working. What guards the join: the labels
must reproduce the run's recorded `test_acc` (within half an image), else the data set here is
not the one the run saw and its images are not available.

Nothing here raises for a run: runs from before predictions were saved, a data set not on this
machine or a file that does not match make that (configuration, seed) "not available", with why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdprune.errors import one_line
from kdprune.results import METRICS_FILE, read_metrics
from kdprune.run_record import CONFIG, CONFIG_FINGERPRINT, TEST_ACC

NO_PREDICTIONS = "no per-image test predictions (the runs predate test_predictions.npy)"
# Keys of `dataset.splits` the test split does not depend on: left out of the cache key.
TEST_INDEPENDENT = ("split_seed", "val_size")


@dataclass(frozen=True)
class SeedImages:
    """One configuration at one seed: per test image 1.0 right, 0.0 wrong (the mean over the
    seed's duplicate runs), NaN where not evaluated (`trainer.max_batches`); and its runs."""

    correct: np.ndarray
    runs: int


@dataclass
class LabelCache:
    """Test labels per data set (or why they could not be loaded), for one report."""

    labels: dict[str, np.ndarray | str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageEvidence:
    """Every (configuration fingerprint, seed)'s images, or the reason it has none."""

    seeds: Mapping[tuple[str, Any], SeedImages | str] = field(default_factory=dict)
    default: str = NO_PREDICTIONS

    def side(self, fingerprint: str, seed: Any) -> SeedImages | str:
        """One side of a contrast at one seed: its images, or why there are none."""
        return self.seeds.get((fingerprint, seed), self.default)


def _load_labels(spec: Mapping[str, Any]) -> np.ndarray | str:
    """Build the data set of `spec` (a resolved `dataset.splits`) and read its test labels."""
    from kdprune.data import split_labels
    from kdprune.instantiation import instantiate

    root = spec.get("root")
    if isinstance(root, str) and not Path(root).exists():  # the builder would download into it
        return f"data set not found at {root}"
    try:
        return split_labels(instantiate(dict(spec)).test)
    except Exception as err:  # a builder fails in many ways (TypeError, ImportError, ...): a
        # report on runs says "not available" for any of them, never stops
        return f"test labels of {spec.get('_target_')} not loaded: {one_line(err)}"


def dataset_labels(config: Mapping[str, Any], cache: LabelCache) -> np.ndarray | str:
    """The test labels of a run's data set (its resolved config), loaded once per data set."""
    dataset = config.get("dataset")
    spec = dataset.get("splits") if isinstance(dataset, Mapping) else None
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        return "the run's config names no data set to read labels from"
    key = json.dumps({k: v for k, v in spec.items() if k not in TEST_INDEPENDENT}, sort_keys=True)
    if key not in cache.labels:
        cache.labels[key] = _load_labels(spec)
    return cache.labels[key]


def run_correctness(run: pd.Series, cache: LabelCache) -> np.ndarray | str:
    """One run's per-image correctness (1.0 / 0.0, NaN not evaluated), or why there is none.
    The data set comes from the run's own metrics.json: the ledger's `config_json` leaves out
    what builds it (`_target_`, the data root)."""
    from kdprune.predictions import read_predictions  # here: it imports torch

    name = run.get("test_predictions_file")
    if not isinstance(name, str):
        return NO_PREDICTIONS
    folder = Path(run["run_dir"])
    try:
        predictions = read_predictions(folder / name)
        metrics = read_metrics(folder / METRICS_FILE)
    except (OSError, ValueError) as err:
        return f"{folder}: {one_line(err)}"
    labels = dataset_labels(metrics.get(CONFIG) or {}, cache)
    if isinstance(labels, str):
        return labels
    if predictions.shape != labels.shape:
        return f"{folder}: {len(predictions)} predictions for {len(labels)} test images"
    evaluated = predictions != np.iinfo(predictions.dtype).max
    correct = np.where(evaluated, predictions == labels, np.nan)
    recorded = float(run.get(TEST_ACC, np.nan))
    if not evaluated.any() or not abs(np.nanmean(correct) - recorded) <= 0.5 / evaluated.sum():
        return f"{folder}: predictions and labels do not reproduce test_acc {recorded:.4f}"
    return correct


def _per_seed(values: list[np.ndarray | str]) -> SeedImages | str:
    """A seed's duplicate runs as one: their correctness averaged (as `per_seed` averages
    their accuracies); the first reason when one of them has no images."""
    reasons = [v for v in values if isinstance(v, str)]
    if reasons:
        return reasons[0]
    arrays = [v for v in values if not isinstance(v, str)]
    if len({v.shape for v in arrays}) > 1:
        return "duplicate runs of a seed with different test sets"
    return SeedImages(np.mean(arrays, axis=0), len(arrays))


def image_evidence(runs: pd.DataFrame) -> ImageEvidence:
    """Every (configuration, seed)'s per-image correctness; nothing is loaded, no data set
    built, when no run saved predictions."""
    if runs.empty or runs.get("test_predictions_file", pd.Series(dtype=object)).isna().all():
        return ImageEvidence()
    cache = LabelCache()
    grouped: dict[tuple[str, Any], list[np.ndarray | str]] = {}
    for _, run in runs.iterrows():
        key = (run[CONFIG_FINGERPRINT], run["seed"])
        grouped.setdefault(key, []).append(run_correctness(run, cache))
    return ImageEvidence({key: _per_seed(values) for key, values in grouped.items()})
