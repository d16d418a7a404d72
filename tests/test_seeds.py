"""Every source of noise has its own seed (init, data order, validation split), each recorded, and
every run saves its per-example test predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kdprune.app import run
from kdprune.data import Augment, make_loaders
from kdprune.instantiation import instantiate
from kdprune.predictions import PREDICTIONS_FILE, read_predictions, write_predictions
from kdprune.reporting.correctness import LabelCache, run_correctness
from kdprune.reporting.runs import ledger_row
from kdprune.results import config_fingerprint, read_metrics

FAST = ["teacher.epochs=1", "budget.student_epochs=2", "budget.finetune_epochs=1"]


def test_split_and_data_seeds_follow_seed_unless_pinned(make_cfg) -> None:
    cfg = make_cfg("seed=3")
    assert (cfg.data_seed, cfg.split_seed, cfg.dataset.splits.split_seed) == (3, 3, 3)
    pinned = make_cfg("seed=3", "split_seed=0", "data_seed=7")
    assert (pinned.data_seed, pinned.dataset.splits.split_seed) == (7, 0)


def test_split_seed_moves_validation_but_not_test(make_cfg) -> None:
    a = instantiate(make_cfg("split_seed=0").dataset.splits)
    b = instantiate(make_cfg("split_seed=1").dataset.splits)
    assert not torch.equal(a.val.images, b.val.images)
    assert torch.equal(a.test.labels, b.test.labels)
    # the same test images, up to the normalisation by each split's own training statistics
    assert torch.allclose(
        a.test.images.flatten(1).argmax(1).float(), b.test.images.flatten(1).argmax(1).float()
    )


def _first_batch(cfg) -> torch.Tensor:
    splits = instantiate(cfg.dataset.splits)
    loaders = make_loaders(splits, 64, 64, torch.device("cpu"), Augment(), int(cfg.data_seed))
    return next(iter(loaders.train))[2]


def test_data_seed_alone_changes_the_batch_order(make_cfg) -> None:
    same = _first_batch(make_cfg("seed=0", "data_seed=0"))
    assert torch.equal(same, _first_batch(make_cfg("seed=5", "data_seed=0", "split_seed=0")))
    assert not torch.equal(same, _first_batch(make_cfg("seed=0", "data_seed=1")))


@pytest.fixture
def two_runs(make_cfg, tmp_path: Path) -> tuple[dict, dict]:
    base = run(make_cfg(*FAST, "seed=0"), tmp_path / "a")
    other = run(make_cfg(*FAST, "seed=0", "data_seed=1"), tmp_path / "b")
    return base, other


def test_runs_record_their_seeds_and_pool_across_them(two_runs) -> None:
    base, other = two_runs
    assert (base["seed"], base["data_seed"], base["split_seed"]) == (0, 0, 0)
    assert (other["seed"], other["data_seed"], other["split_seed"]) == (0, 1, 0)
    assert [h["train_loss"] for h in base["history"]] != [h["train_loss"] for h in other["history"]]
    assert config_fingerprint(base["config"]) == config_fingerprint(other["config"])


def test_test_predictions_are_saved_and_give_test_acc(two_runs, make_cfg) -> None:
    base, _ = two_runs
    run_dir = Path(base["model_file"]).parent
    assert read_metrics(run_dir)["test_predictions_file"] == PREDICTIONS_FILE
    predictions = read_predictions(run_dir)
    labels = instantiate(make_cfg().dataset.splits).test.labels.numpy()
    assert predictions.dtype == np.uint8 and predictions.shape == labels.shape
    assert float((predictions == labels).mean()) == pytest.approx(base["test_acc"])
    assert not list(run_dir.glob(f".{PREDICTIONS_FILE}*"))  # no temporary file left
    # the report finds the same labels from the run's own resolved config
    correct = run_correctness(pd.Series(ledger_row(read_metrics(run_dir), run_dir)), LabelCache())
    assert not isinstance(correct, str), correct
    assert float(np.nanmean(correct)) == pytest.approx(base["test_acc"])


def test_prediction_files_mark_unevaluated_images_and_widen_for_many_classes(tmp_path) -> None:
    write_predictions(tmp_path, torch.tensor([3, -1, 0]), num_classes=10)
    assert read_predictions(tmp_path).tolist() == [3, 255, 0]
    write_predictions(tmp_path, torch.tensor([999, 2]), num_classes=1000)
    saved = read_predictions(tmp_path / PREDICTIONS_FILE)
    assert saved.dtype == np.uint16 and saved.tolist() == [999, 2]
