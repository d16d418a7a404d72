"""Batches of (images, labels, indices) for the engine, from memory or from a DataLoader.

In a run over several processes (`kdprune.distributed`) every loader shards each *global* batch
among the ranks: all ranks walk the same global batches of `batch_size` images in the same order
and each takes its contiguous share, so the global batch, the number of steps and the learning
rate schedule are those of the one-process run. A training batch too small to give every rank
an image (the last one, at most) is left out; evaluation covers the whole split.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sized
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from kdprune.data.datasets import Splits, TensorSplit
from kdprune.distributed import Ranks

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffling and augmentation: a pure function of (seed, epoch)."""
    return seed * 100_003 + epoch


def global_batches(n: int, batch_size: int, ranks: Ranks, drop_last: bool, train: bool) -> int:
    """How many global batches a split of `n` images gives: a training split drops a last batch
    that cannot give every rank an image (one process: none is dropped)."""
    full, tail = divmod(n, batch_size)
    if drop_last or tail == 0:
        return full
    return full + (tail >= (ranks.world_size if train else 1))


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
        ranks: Ranks | None = None,
    ):
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment if augment is not None and augment.active else None
        self.seed = seed
        self.drop_last = drop_last
        self.ranks = ranks or Ranks()
        self.epoch = 0

    @property
    def deterministic(self) -> bool:
        """True when a sample's input is the same every epoch (so teacher outputs can be cached)."""
        return self.augment is None

    def unsharded(self) -> TensorLoader:
        """The same loader giving every rank whole global batches (calibration for a cut that
        must be the same on every rank)."""
        whole = copy.copy(self)
        whole.ranks = Ranks()
        return whole

    @property
    def num_samples(self) -> int:
        """How many images the split holds (not batches)."""
        return len(self.labels)

    def __len__(self) -> int:
        return global_batches(
            len(self.labels), self.batch_size, self.ranks, self.drop_last, self.shuffle
        )

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
            if self.ranks.active:
                # This rank's share. The whole batch was augmented (cheap tensor ops), so the
                # images and their augmentation are those of the one-process run.
                share = self.ranks.share(len(idx))
                if share.start == share.stop:
                    continue  # the last evaluation batch has no image left for this rank
                x, idx = x[share], idx[share]
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
        ranks: Ranks | None = None,
    ):
        self.dataset = dataset
        self.device = device
        self.augment = augment if augment is not None and augment.active else None
        self.seed = seed
        self.ranks = ranks or Ranks()
        self.epoch = 0
        self.settings = (batch_size, shuffle, num_workers, drop_last)
        generator = torch.Generator().manual_seed(seed)
        common: dict[str, Any] = {
            "num_workers": num_workers,
            "pin_memory": device.type == "cuda",
            "persistent_workers": num_workers > 0,
            "generator": generator,
        }
        if not self.ranks.active:
            self.loader = DataLoader(
                dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, **common
            )
            return
        sized = cast(Sized, dataset)  # a map-style data set: it has a length
        order: Sampler[int] = SequentialSampler(sized)
        if shuffle:
            order = RandomSampler(sized, generator=generator)
        batches = ShardedBatches(BatchSampler(order, batch_size, drop_last), self.ranks, shuffle)
        self.loader = DataLoader(dataset, batch_sampler=batches, **common)

    @property
    def deterministic(self) -> bool:
        return self.augment is None

    @property
    def num_samples(self) -> int:
        """How many images the split holds (not batches)."""
        return len(cast(Sized, self.dataset))

    def unsharded(self) -> StreamLoader:
        """The same loader giving every rank whole global batches (calibration for a cut that
        must be the same on every rank)."""
        batch_size, shuffle, num_workers, drop_last = self.settings
        whole = StreamLoader(
            self.dataset, batch_size, self.device, shuffle, self.augment, self.seed,
            num_workers, drop_last,
        )  # fmt: skip
        whole.set_epoch(self.epoch)
        return whole

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.loader.generator.manual_seed(epoch_seed(self.seed, epoch))

    def __iter__(self) -> Iterator[Batch]:
        # Each rank augments its own share: its draws are its own (one process: unchanged).
        seed = epoch_seed(self.seed, self.epoch) * self.ranks.world_size + self.ranks.rank
        gen = torch.Generator(device=self.device).manual_seed(seed)
        for x, y, idx in self.loader:
            x = x.to(self.device, non_blocking=True)
            if self.augment is not None:
                x = self.augment(x, gen)
            yield x, y.to(self.device, non_blocking=True), idx.to(self.device, non_blocking=True)


class ShardedBatches(Sampler[list[int]]):
    """The global batches of `batches`, each cut to this rank's share: every rank walks the
    same batches (the same generator, reseeded each epoch). A training batch that cannot give
    every rank an image is left out; in evaluation a rank with no image skips the batch."""

    def __init__(self, batches: BatchSampler, ranks: Ranks, train: bool):
        self.batches, self.ranks, self.train = batches, ranks, train

    def __len__(self) -> int:
        b, n = self.batches, len(cast(Sized, self.batches.sampler))
        return global_batches(n, b.batch_size, self.ranks, b.drop_last, self.train)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            if self.train and len(batch) < self.ranks.world_size:
                continue
            share = batch[self.ranks.share(len(batch))]
            if share:
                yield share


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
    ranks: Ranks | None = None,
) -> Loaders:
    """Loaders for a run: in-memory tensors on the device when the data set fits, else streaming;
    sharded over `ranks` in a run over several processes."""
    ranks = ranks or Ranks()
    train, val, test = splits.train, splits.val, splits.test
    if isinstance(train, TensorSplit):  # all three are (Splits.in_memory)
        assert isinstance(val, TensorSplit) and isinstance(test, TensorSplit)
        return Loaders(
            train=TensorLoader(train, batch_size, device, True, augment, seed, ranks=ranks),
            val=TensorLoader(val, eval_batch_size, device, ranks=ranks),
            test=TensorLoader(test, eval_batch_size, device, ranks=ranks),
        )
    assert not isinstance(val, TensorSplit) and not isinstance(test, TensorSplit)
    workers: dict[str, Any] = {"num_workers": num_workers, "ranks": ranks}
    return Loaders(
        train=StreamLoader(train, batch_size, device, True, augment, seed, **workers),
        val=StreamLoader(val, eval_batch_size, device, **workers),
        test=StreamLoader(test, eval_batch_size, device, **workers),
    )
