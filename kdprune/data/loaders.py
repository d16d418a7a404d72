"""Batches of (images, labels, indices) for the engine, from memory or from a DataLoader."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from kdprune.data.datasets import Splits, TensorSplit

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffling and augmentation: a pure function of (seed, epoch)."""
    return seed * 100_003 + epoch


@dataclass(frozen=True)
class Augment:
    """Batch augmentation on tensors: random crop after zero padding, random horizontal flip."""

    crop_padding: int = 0
    hflip: bool = False

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.hflip

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.hflip:
            flip = torch.rand(n, generator=generator, device=generator.device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        if self.crop_padding > 0:
            p = self.crop_padding
            padded = F.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=generator.device)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=generator.device)
            rows = (dy.view(-1, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
            cols = (dx.view(-1, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
            batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
            chan = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
            x = padded[batch, chan, rows, cols]
        return x


class TensorLoader:
    """Shuffled mini-batches sliced from tensors that already sit on the training device.

    Written by hand rather than using DataLoader: for data held in memory, DataLoader's per-sample
    indexing and collation cost more than a small network's forward pass. Each epoch's order comes
    from (seed, epoch), so a run is reproducible and resumable without hidden generator state.
    """

    def __init__(
        self,
        split: TensorSplit,
        batch_size: int,
        device: torch.device,
        shuffle: bool = False,
        augment: Augment | None = None,
        seed: int = 0,
        drop_last: bool = False,
    ):
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment if augment is not None and augment.active else None
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    @property
    def deterministic(self) -> bool:
        """True when a sample's input is the same every epoch (so teacher outputs can be cached)."""
        return self.augment is None

    @property
    def num_samples(self) -> int:
        """How many images the split holds (not batches)."""
        return len(self.labels)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.labels)
        gen = torch.Generator(device=self.images.device)
        gen.manual_seed(epoch_seed(self.seed, self.epoch))
        order = (
            torch.randperm(n, generator=gen, device=self.images.device)
            if self.shuffle
            else torch.arange(n, device=self.images.device)
        )
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.images[idx]
            if self.augment is not None:
                x = self.augment(x, gen)
            yield x, self.labels[idx], idx


class StreamLoader:
    """A DataLoader over an (image, label, index) dataset, moved to the device batch by batch."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        device: torch.device,
        shuffle: bool = False,
        augment: Augment | None = None,
        seed: int = 0,
        num_workers: int = 4,
        drop_last: bool = False,
    ):
        self.dataset = dataset
        self.device = device
        self.augment = augment if augment is not None and augment.active else None
        self.seed = seed
        self.epoch = 0
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
            drop_last=drop_last,
            generator=torch.Generator().manual_seed(seed),
        )

    @property
    def deterministic(self) -> bool:
        return self.augment is None

    @property
    def num_samples(self) -> int:
        """How many images the split holds (not batches)."""
        return len(self.dataset)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.loader.generator.manual_seed(epoch_seed(self.seed, epoch))

    def __iter__(self) -> Iterator[Batch]:
        gen = torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, self.epoch))
        for x, y, idx in self.loader:
            x = x.to(self.device, non_blocking=True)
            if self.augment is not None:
                x = self.augment(x, gen)
            yield x, y.to(self.device, non_blocking=True), idx.to(self.device, non_blocking=True)


@dataclass
class Loaders:
    """The three loaders of a run; `train` shuffles and augments, `val` and `test` do neither."""

    train: TensorLoader | StreamLoader
    val: TensorLoader | StreamLoader
    test: TensorLoader | StreamLoader


def make_loaders(
    splits: Splits,
    batch_size: int,
    eval_batch_size: int,
    device: torch.device,
    augment: Augment,
    seed: int,
    num_workers: int = 4,
) -> Loaders:
    """Loaders for a run: in-memory tensors on the device when the data set fits, else streaming."""
    if splits.in_memory:
        return Loaders(
            train=TensorLoader(splits.train, batch_size, device, True, augment, seed),
            val=TensorLoader(splits.val, eval_batch_size, device),
            test=TensorLoader(splits.test, eval_batch_size, device),
        )
    return Loaders(
        train=StreamLoader(splits.train, batch_size, device, True, augment, seed, num_workers),
        val=StreamLoader(splits.val, eval_batch_size, device, num_workers=num_workers),
        test=StreamLoader(splits.test, eval_batch_size, device, num_workers=num_workers),
    )
