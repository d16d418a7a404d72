"""(a) Training throughput: kdprune's engine vs a bare PyTorch loop, and its Markdown."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.fixtures import build_as_run, dims, engine_epoch, epoch_stage, load_splits
from benchmarks.markdown import met_cell, target_cell, times
from benchmarks.measure import figure, interleaved, medians, timed
from benchmarks.sizes import Sizes

KEY = "engine_vs_bare_throughput"


def bare_loop(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, bs: int, steps: int):
    """The hand-written reference: shuffled slices of in-memory tensors, CE, AdamW."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    order = torch.randperm(len(labels))
    for b in range(steps):
        idx = order[b * bs : (b + 1) * bs]
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.item()


def measure(sizes: Sizes) -> dict[str, Any]:
    """(a) Images/s of `kdprune.engine.train_epoch` vs `bare_loop`: same model, data, batches."""
    from kdprune.data import TensorLoader
    from kdprune.distillation import CrossEntropyObjective

    splits = load_splits(sizes)
    cpu = torch.device("cpu")
    loader = TensorLoader(splits.train, sizes.batch_size, cpu, shuffle=True, seed=0)
    steps = min(sizes.train_steps, len(loader))
    images = steps * sizes.batch_size
    stage = epoch_stage("bench", CrossEntropyObjective(), steps, cpu)
    engine_model = build_as_run(sizes.train_model, *dims(splits.train))
    bare_model = copy.deepcopy(engine_model)
    x, y = splits.train.images, splits.train.labels
    sides = {
        "engine": lambda: images / engine_epoch(engine_model, loader, stage),
        "bare": lambda: (
            images / timed(lambda: bare_loop(bare_model, x, y, sizes.batch_size, steps))
        ),
    }
    interleaved(sides, 1)  # warm-up (allocator, oneDNN primitive caches)
    samples = interleaved(sides, sizes.reps)
    med = medians(samples)
    return figure(
        "training",
        {KEY: med["engine"] / med["bare"]},
        images_per_s=med,
        samples=samples,
        setup=f"{sizes.train_model} on {sizes.dataset}, batch {sizes.batch_size}, {steps} steps "
        f"per sample, AdamW, in-memory tensors, {sizes.reps} interleaved samples per side",
    )


def summary(f: dict[str, Any]) -> list[list[str]]:
    """(a)'s row of the summary table: figure, measured, target, met."""
    return [
        [
            "(a) training images/s, kdprune engine / bare PyTorch loop",
            times(f["ratios"][KEY]),
            target_cell(f["targets"][KEY], "×"),
            met_cell(f, KEY),
        ]
    ]


def section(f: dict[str, Any]) -> list[str]:
    """(a) details."""
    ips = f["images_per_s"]
    return [
        "## (a) Training loop: kdprune's engine vs a bare PyTorch loop",
        "",
        f"Setup: {f['setup']}. The engine side is `kdprune.engine.train_epoch` (lr schedule, "
        "loss and accuracy kept on the device, a finiteness check every 50 steps); the bare side "
        "is `bare_loop` in `benchmarks/training.py` (slice, forward, backward, step).",
        "",
        f"Images/s (median): engine {ips['engine']:.0f}, bare loop {ips['bare']:.0f} → "
        f"**{times(f['ratios'][KEY])}**. Reproduce: `{f['command']}`.",
    ]
