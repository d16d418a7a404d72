"""Data splits, loaders and the data-set builders (on data the tests make; no downloads)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.hang_guard import HANG_GUARD
from PIL import Image

from kdprune.data import Augment, TensorLoader, digits, imagefolder, split_indices
from kdprune.data import datasets as ds
from kdprune.errors import ConfigError, DataError


def test_split_indices_disjoint_seeded_and_complete() -> None:
    train, val = split_indices(100, 20, seed=3)
    assert len(val) == 20 and len(train) == 80
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(100))
    again, _ = split_indices(100, 20, seed=3)
    other, _ = split_indices(100, 20, seed=4)
    assert torch.equal(train, again) and not torch.equal(train, other)


def test_split_indices_rejects_empty_split() -> None:
    with pytest.raises(ConfigError, match="val_size"):
        split_indices(10, 10, seed=0)


def test_digits_splits_are_disjoint_and_cover_the_set() -> None:
    splits = digits()
    rows = [splits.train.images, splits.val.images, splits.test.images]
    assert sum(len(r) for r in rows) == 1797
    assert splits.train.images.shape[1:] == (1, 8, 8)
    # No image appears in two splits (digits has a few exact duplicates; compare counts).
    flat = [set(map(bytes, r.flatten(1).numpy().astype(np.float32))) for r in rows]
    overlap = (flat[0] & flat[2]) | (flat[1] & flat[2])
    assert len(overlap) <= 5
    assert splits.train.images.mean().abs() < 0.05  # normalised with train statistics


def _write_idx(path: Path, data: np.ndarray) -> None:
    header = np.array([0x0800 + data.ndim] + list(data.shape), dtype=">i4")
    if data.ndim == 1:
        header[0] = 2049
    else:
        header[0] = 2051
    with gzip.open(path, "wb") as fh:
        fh.write(header.tobytes() + data.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_debian_package_files(tmp_path, monkeypatch) -> None:
    debian = tmp_path / "debian"
    debian.mkdir()
    rng = np.random.default_rng(0)
    _write_idx(debian / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (60, 28, 28)))
    _write_idx(debian / "train-labels-idx1-ubyte.gz", np.arange(60) % 10)
    _write_idx(debian / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (20, 28, 28)))
    _write_idx(debian / "t10k-labels-idx1-ubyte.gz", np.arange(20) % 10)
    monkeypatch.setattr(ds, "DEBIAN_FASHION_MNIST", debian)
    splits = ds.fashion_mnist(str(tmp_path / "data"), val_size=10)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (50, 10, 20)
    assert splits.test.images.shape == (20, 1, 28, 28)
    assert splits.test.labels.tolist() == (np.arange(20) % 10).tolist()


def test_fashion_mnist_missing_everywhere_names_both_ways(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ds, "DEBIAN_FASHION_MNIST", tmp_path / "absent")

    def no_network(*args, **kwargs):
        raise RuntimeError("no network")

    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.FashionMNIST, "download", no_network)
    with pytest.raises(DataError) as err:
        ds.fashion_mnist(str(tmp_path / "data"))
    assert "dataset-fashion-mnist" in str(err.value) and "download" in str(err.value)


def test_imagefolder_missing_root_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="root"):
        imagefolder(None, image_size=16)
    with pytest.raises(ConfigError, match="not a folder"):
        imagefolder(str(tmp_path / "nope"), image_size=16)


def test_imagefolder_splits_a_class_tree(tmp_path) -> None:
    for cls in ("cat", "dog"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (20, 20), (i * 20, 0, 0)).save(tmp_path / "train" / cls / f"{i}.png")
    splits = imagefolder(str(tmp_path), image_size=16, val_size=0.2)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 20
    x, y, i = splits.train[0]
    assert x.shape == (3, 16, 16) and y in (0, 1) and isinstance(i, int)


@pytest.mark.parametrize("own_test", [False, True])
def test_split_labels_are_the_labels_of_the_images_in_order(tmp_path, own_test: bool) -> None:
    folders = ("train", "test") if own_test else ("train",)
    for folder in folders:
        for cls in ("cat", "dog"):
            (tmp_path / folder / cls).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / folder / cls / f"{i}.png")
    splits = imagefolder(str(tmp_path), image_size=8, val_size=0.25)
    for split in (splits.test, splits.val):
        assert ds.split_labels(split).tolist() == [split[j][1] for j in range(len(split))]
    small = digits()
    assert np.array_equal(ds.split_labels(small.test), small.test.labels.numpy())
    with pytest.raises(DataError, match="no labels"):
        ds.split_labels(torch.utils.data.TensorDataset(torch.zeros(2)))


def test_tensor_loader_is_seeded_per_epoch_and_covers_all() -> None:
    split = digits().train
    loader = TensorLoader(split, 100, torch.device("cpu"), shuffle=True, seed=1)
    first = torch.cat([idx for _, _, idx in loader])
    assert sorted(first.tolist()) == list(range(len(split)))
    again = torch.cat([idx for _, _, idx in loader])
    assert torch.equal(first, again)
    loader.set_epoch(1)
    assert not torch.equal(first, torch.cat([idx for _, _, idx in loader]))
    x, y, idx = next(iter(loader))
    assert torch.equal(x, split.images[idx]) and torch.equal(y, split.labels[idx])


def test_augment_changes_images_but_keeps_shape() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = Augment(crop_padding=2, hflip=True)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    assert not Augment().active and Augment(hflip=True).active


def test_make_data_prepares_a_data_set_from_its_config(tmp_path: Path) -> None:
    # `make data` runs `python -m kdprune.data NAME`: the dataset config alone (its split seed
    # interpolates a run's key) must compose there.
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "kdprune.data", "digits", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("digits: train ") and "test 359" in out.stdout
