"""Data sets as train / val / test splits: small ones in memory as tensors, large ones as folders.

Every builder returns a `Splits`. Validation is a seeded split of the training set: the data set's
`split_seed`, which follows the run's top-level `split_seed` (itself `${seed}` unless pinned), so a
sweep over seeds varies which images validate while every trial of one seed validates on the same
images. The test set is the same for every run (a data set's own test files, or a split cut with the
fixed `test_seed`), so per-example test predictions of any two runs line up; it only ever reports.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from collections.abc import Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from kdprune.errors import ConfigError, DataError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass
class TensorSplit:
    """One split held in memory: normalised float images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Splits:
    """Train / val / test splits, either all `TensorSplit` or all torch `Dataset`, and the
    identity of the data they came from (which files, where), part of every teacher's cache key."""

    train: TensorSplit | Dataset
    val: TensorSplit | Dataset
    test: TensorSplit | Dataset
    identity: str = ""

    @property
    def in_memory(self) -> bool:
        return isinstance(self.train, TensorSplit)


def files_identity(root: str | os.PathLike, files: list[Path]) -> str:
    """The identity of a data set on disk: its root and a hash of its files' names and sizes."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"{path.relative_to(root)}\t{path.stat().st_size}\n".encode())
    return f"{Path(root).resolve()}#{digest.hexdigest()[:16]}"


def split_indices(n: int, val_size: int | float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded disjoint (train, val) index split of range(n); val_size is a count or a fraction."""
    fraction = isinstance(val_size, float) and val_size < 1
    n_val = int(round(val_size * n)) if fraction else int(val_size)
    if not 0 < n_val < n:
        raise ConfigError(f"dataset.splits.val_size must leave both splits non-empty: {val_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (images - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def _tensor_splits(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    val_size: int | float,
    split_seed: int,
) -> Splits:
    """Normalise with train-split statistics and cut val out of train."""
    train_idx, val_idx = split_indices(len(train_y), val_size, split_seed)
    fit = train_x[train_idx]
    mean, std = fit.mean(dim=(0, 2, 3)), fit.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return Splits(
        train=TensorSplit(_normalise(fit, mean, std), train_y[train_idx].long()),
        val=TensorSplit(_normalise(train_x[val_idx], mean, std), train_y[val_idx].long()),
        test=TensorSplit(_normalise(test_x, mean, std), test_y.long()),
    )


def _to_nchw_float(data: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, H, W, C) to float (N, C, H, W) in [0, 1]."""
    x = torch.as_tensor(np.asarray(data))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return x.contiguous().float().div_(255.0)


def _stage_debian_fashion_mnist(raw: Path) -> bool:
    """Copy Debian's dataset-fashion-mnist files into torchvision's raw layout; False if absent."""
    if all((raw / name).exists() for name in FASHION_MNIST_FILES):
        return True
    if not all((DEBIAN_FASHION_MNIST / f"{n}.gz").exists() for n in FASHION_MNIST_FILES):
        return False
    raw.mkdir(parents=True, exist_ok=True)
    for name in FASHION_MNIST_FILES:
        tmp = raw / f".{name}.{os.getpid()}.tmp"
        with gzip.open(DEBIAN_FASHION_MNIST / f"{name}.gz", "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, raw / name)
    return True


def _torchvision(cls_name: str, root: str, download: bool, **kwargs) -> tuple[Any, Any]:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    try:
        return cls(root, train=True, download=download, **kwargs), cls(
            root, train=False, download=download, **kwargs
        )
    except (RuntimeError, OSError) as err:  # torchvision raises both for missing / failed downloads
        raise DataError(
            f"{cls_name} is not under {root} and could not be downloaded ({err}); "
            "run on a machine with internet once, or copy the files there"
        ) from err


def _from_torchvision(train: Any, test: Any, val_size: int | float, split_seed: int) -> Splits:
    """Splits from a torchvision data set pair whose `.data` holds uint8 images (torchvision's
    classes carry no type information: `Any`)."""
    targets = [torch.as_tensor(d.targets) for d in (train, test)]
    splits = _tensor_splits(
        _to_nchw_float(train.data),
        targets[0],
        _to_nchw_float(test.data),
        targets[1],
        val_size,
        split_seed,
    )
    folder = Path(train.root) / type(train).__name__
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    splits.identity = files_identity(folder, files) if files else type(train).__name__
    return splits


def fashion_mnist(root: str, val_size: int | float = 5000, split_seed: int = 0) -> Splits:
    """Fashion-MNIST (70k 28x28 grey images, 10 classes) from Debian's package or torchvision."""
    staged = _stage_debian_fashion_mnist(Path(root) / "FashionMNIST" / "raw")
    try:
        train, test = _torchvision("FashionMNIST", root, download=not staged)
    except DataError as err:
        raise DataError(
            "Fashion-MNIST not found: install Debian's package "
            "(`make data`, i.e. apt-get install -y dataset-fashion-mnist) "
            f"or let torchvision download it into {root} (needs internet): {err}"
        ) from err
    return _from_torchvision(train, test, val_size, split_seed)


def mnist(root: str, val_size: int | float = 5000, split_seed: int = 0) -> Splits:
    """MNIST (70k 28x28 grey digits) through torchvision (downloads once into root)."""
    train, test = _torchvision("MNIST", root, download=True)
    return _from_torchvision(train, test, val_size, split_seed)


def _cifar(cls_name: str, root: str, val_size: int | float, split_seed: int) -> Splits:
    train, test = _torchvision(cls_name, root, download=True)
    return _from_torchvision(train, test, val_size, split_seed)


def cifar10(root: str, val_size: int | float = 5000, split_seed: int = 0) -> Splits:
    """CIFAR-10 (60k 32x32 colour images, 10 classes) through torchvision."""
    return _cifar("CIFAR10", root, val_size, split_seed)


def cifar100(root: str, val_size: int | float = 5000, split_seed: int = 0) -> Splits:
    """CIFAR-100 (60k 32x32 colour images, 100 classes) through torchvision."""
    return _cifar("CIFAR100", root, val_size, split_seed)


def digits(
    val_size: int | float = 0.15, test_size: float = 0.2, split_seed: int = 0, test_seed: int = 1
) -> Splits:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images): no download at all."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target)
    rest, test = split_indices(len(y), test_size, test_seed)
    splits = _tensor_splits(x[rest], y[rest], x[test], y[test], val_size, split_seed)
    splits.identity = "sklearn-digits#" + hashlib.sha256(bunch.images.tobytes()).hexdigest()[:16]
    return splits


class _Indexed(Dataset):
    """Wraps a dataset so items are (image, label, index): KD looks teacher outputs up by index."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(cast(Sized, self.base))  # a map-style data set: it has a length

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x, y, i


def imagefolder(
    root: str | None,
    image_size: int,
    val_size: int | float = 0.1,
    split_seed: int = 0,
    test_seed: int = 1,
) -> Splits:
    """Any one-folder-per-class tree, streamed from disk.

    `root` holds `train/` (and optionally `test/`, else a seeded test split is cut too), or the
    class folders directly. Images are resized to `image_size`, normalised with ImageNet statistics.
    """
    import torchvision.datasets as tvd
    import torchvision.transforms as T

    if not root:
        raise ConfigError(
            "dataset.splits.root must name an image folder, e.g. dataset.splits.root=/data/tiny"
        )
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ConfigError(f"dataset.splits.root {str(path)!r} is not a folder")
    tf = T.Compose(
        [
            T.Resize((image_size, image_size)),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    train_dir = path / "train" if (path / "train").is_dir() else path
    try:
        full = tvd.ImageFolder(str(train_dir), transform=tf)
    except (FileNotFoundError, RuntimeError) as err:
        raise DataError(f"no class folders with images under {train_dir}: {err}") from err
    if (path / "test").is_dir():
        test: Dataset = tvd.ImageFolder(str(path / "test"), transform=tf)
        pool = torch.arange(len(full))
    else:
        pool, test_idx = split_indices(len(full), 0.1, test_seed)
        test = Subset(full, test_idx.tolist())
    train_idx, val_idx = split_indices(len(pool), val_size, split_seed)
    return Splits(
        train=_Indexed(Subset(full, pool[train_idx].tolist())),
        val=_Indexed(Subset(full, pool[val_idx].tolist())),
        test=_Indexed(test),
        identity=files_identity(path, [p for p in path.rglob("*") if p.is_file()]),
    )


def split_labels(split: TensorSplit | Dataset) -> np.ndarray:
    """The labels of a split in its order, without reading a single image: a TensorSplit's
    tensor, or a torchvision data set's `targets` through the `_Indexed` / `Subset` wrappers the
    builders above put around it (DataError for any other data set)."""
    if isinstance(split, TensorSplit):
        return split.labels.numpy()
    if isinstance(split, _Indexed):
        return split_labels(split.base)
    if isinstance(split, Subset):
        return split_labels(split.dataset)[np.asarray(split.indices, dtype=np.int64)]
    targets = getattr(split, "targets", None)
    if targets is None:
        raise DataError(f"no labels to read without its images: {type(split).__name__}")
    return np.asarray(targets, dtype=np.int64)
