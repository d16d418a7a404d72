"""(e) GPU-resident, AMP, channels_last teacher training vs a DataLoader, and its Markdown."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmarks.fixtures import build, engine_epoch, epoch_stage
from benchmarks.markdown import times
from benchmarks.measure import figure, interleaved, loadavg, medians, reproduce
from benchmarks.sizes import Sizes
from kdprune.reporting.markdown import md_table

TITLE = "(e) GPU-resident + AMP + channels_last / DataLoader, images/s"


class IndexedTensors(torch.utils.data.Dataset):
    """(image, label, index) items from CPU tensors: what a DataLoader-fed run reads."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.images[i], self.labels[i], i


def cuda_sides(sizes: Sizes, device: torch.device) -> dict[str, Callable[[], float]]:
    """Three ways to train the same teacher: GPU-resident + AMP + channels_last; DataLoader fp32;
    DataLoader + AMP + channels_last (separates the data path from the number format)."""
    from kdprune.data import Augment, StreamLoader, TensorLoader, TensorSplit
    from kdprune.distillation import CrossEntropyObjective

    gen = torch.Generator().manual_seed(0)
    images = torch.randn(sizes.cuda_samples, 3, 32, 32, generator=gen)
    labels = torch.randint(0, 10, (sizes.cuda_samples,), generator=gen)
    augment = Augment(crop_padding=4, hflip=True)  # conf/dataset/cifar10.yaml's
    bs = sizes.batch_size
    resident = TensorLoader(TensorSplit(images, labels), bs, device, True, augment, 0, True)
    streamed = StreamLoader(
        IndexedTensors(images, labels), bs, device, True, augment, 0, sizes.cuda_workers, True
    )
    steps = min(sizes.cuda_steps, len(resident))
    fast = build(sizes.cuda_model, 3, 32).to(device).to(memory_format=torch.channels_last)
    plain = build(sizes.cuda_model, 3, 32).to(device)
    mixed = copy.deepcopy(fast)

    def side(model: nn.Module, loader, amp: bool) -> Callable[[], float]:
        stage = epoch_stage("teacher", CrossEntropyObjective(), steps, device, amp=amp)
        return lambda: steps * bs / engine_epoch(model, loader, stage)

    return {
        "resident_amp_channels_last": side(fast, resident, True),
        "dataloader_fp32": side(plain, streamed, False),
        "dataloader_amp_channels_last": side(mixed, streamed, True),
    }


def skipped(reason: str) -> dict[str, Any]:
    """The record of a figure that could not be measured here."""
    return {
        "skipped": reason,
        "ratios": {},
        "targets": {},
        "met": {},
        "loadavg": loadavg(),
        "command": reproduce("cuda"),
    }


def measure(sizes: Sizes, device: torch.device | None = None) -> dict[str, Any]:
    """(e) Teacher-training images/s: GPU-resident data + AMP + channels_last vs a DataLoader.

    `device` defaults to the CUDA device; without one the figure is skipped. (Passing the CPU runs
    the same code, which the smoke test does.)
    """
    if device is None:
        if not torch.cuda.is_available():
            return skipped("no CUDA device")
        device = torch.device("cuda")
    sides = cuda_sides(sizes, device)
    interleaved(sides, 1)  # warm-up: cuDNN autotuning, DataLoader workers, allocator
    samples = interleaved(sides, sizes.reps)
    med = medians(samples)
    base = med["dataloader_fp32"]
    return figure(
        "cuda",
        {
            "resident_amp_cl_vs_dataloader": med["resident_amp_channels_last"] / base,
            "dataloader_amp_cl_vs_dataloader": med["dataloader_amp_channels_last"] / base,
        },
        images_per_s=med,
        samples=samples,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        setup=f"{sizes.cuda_model} teacher, {sizes.cuda_samples} random 3x32x32 images, batch "
        f"{sizes.batch_size}, crop+flip augmentation on the device, {sizes.cuda_steps} steps per "
        f"sample, DataLoader with {sizes.cuda_workers} workers and pinned memory",
    )


def summary(f: dict[str, Any]) -> list[list[str]]:
    """(e)'s row of the summary table: figure, measured, target, met."""
    if "skipped" in f:
        return [[TITLE, f"skipped: {f['skipped']}", "—", "—"]]
    return [[TITLE, times(f["ratios"]["resident_amp_cl_vs_dataloader"]), "(reported)", "—"]]


def section(f: dict[str, Any]) -> list[str]:
    """(e) details."""
    if "skipped" in f:
        return [
            "## (e) GPU teacher training",
            "",
            f"skipped: {f['skipped']}. Reproduce on a machine with CUDA: `{f['command']}`.",
        ]
    ips = f["images_per_s"]
    return [
        "## (e) GPU teacher training: GPU-resident data, AMP, channels_last vs a DataLoader",
        "",
        f"Device {f['device']}. Setup: {f['setup']}.",
        "",
        *md_table(
            ["pipeline", "images/s (median)", "vs DataLoader fp32"],
            [
                [
                    "GPU-resident tensors + AMP + channels_last",
                    f"{ips['resident_amp_channels_last']:.0f}",
                    f"**{times(f['ratios']['resident_amp_cl_vs_dataloader'])}**",
                ],
                [
                    "DataLoader + AMP + channels_last",
                    f"{ips['dataloader_amp_channels_last']:.0f}",
                    times(f["ratios"]["dataloader_amp_cl_vs_dataloader"]),
                ],
                ["DataLoader, fp32, NCHW", f"{ips['dataloader_fp32']:.0f}", "1.00×"],
            ],
        ),
        "",
        f"Reproduce: `{f['command']}`.",
    ]
