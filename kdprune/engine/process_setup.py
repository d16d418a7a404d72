"""Device choice, seeding and the host memory allocator."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from kdprune.errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    """`auto` takes cuda, then mps, then cpu; any other name is used as given if it is available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device must be auto, cpu, cuda[:N] or mps, got {name!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} was asked for but CUDA is not available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name} was asked for but MPS is not available here")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so the same seed gives the same numbers on CPU."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


# glibc's mallopt parameters (malloc.h), and the documented default of both thresholds.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_GLIBC_DEFAULT_BYTES = 128 * 1024


def keep_freed_memory(megabytes: int | None) -> bool:
    """Let glibc keep freed blocks up to `megabytes` for reuse instead of returning them to the OS.

    By default glibc serves every allocation above a threshold (adaptive from 128 KiB up to
    32 MiB) with a fresh mmap, unmaps it on free and trims the heap, so each batch's activations
    are page-faulted in again: on this project's CPU a MobileNetV2 batch-64 forward took about
    150 ms that way (a third of it in the kernel) and 83 ms without, with far less spread. Raising
    the mmap and trim thresholds keeps those pages in the heap. PyTorch has no setting for this
    (its CPU allocator calls malloc), hence mallopt by hand; jemalloc or tcmalloc through
    LD_PRELOAD do the same. Returns whether the setting was applied
    (False off glibc, or for `megabytes=None`, which leaves glibc's defaults).
    """
    if megabytes is None:
        return False
    return _set_malloc_thresholds(int(megabytes) << 20)


def _set_malloc_thresholds(size: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, size)) and bool(mallopt(_M_TRIM_THRESHOLD, size))


@contextmanager
def process_settings(threads: int | None, keep_freed_memory_mb: int | None) -> Iterator[None]:
    """Torch's CPU thread count and glibc's allocator thresholds for one run, restored after it.

    A sweep runs many trials in one process: one trial's settings must not leak into the next.
    glibc has no getter for its thresholds, so they go back to its documented 128 KiB defaults
    (its dynamic mmap threshold stays off once a threshold was set by hand).
    """
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    kept = keep_freed_memory(keep_freed_memory_mb)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        if kept:
            _set_malloc_thresholds(_GLIBC_DEFAULT_BYTES)
