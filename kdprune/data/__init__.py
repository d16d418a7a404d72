"""Data sets (train / val / test splits) and the loaders the engine iterates."""

from kdprune.data.datasets import (
    Splits,
    TensorSplit,
    cifar10,
    cifar100,
    digits,
    fashion_mnist,
    imagefolder,
    mnist,
    split_indices,
    split_labels,
)
from kdprune.data.loaders import Augment, Loaders, StreamLoader, TensorLoader, make_loaders

__all__ = [
    "Augment",
    "Loaders",
    "Splits",
    "StreamLoader",
    "TensorLoader",
    "TensorSplit",
    "cifar10",
    "cifar100",
    "digits",
    "fashion_mnist",
    "imagefolder",
    "make_loaders",
    "mnist",
    "split_indices",
    "split_labels",
]
