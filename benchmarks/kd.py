"""(b) A KD epoch vs a cross-entropy epoch (cached and live teacher logits), and its Markdown."""

from __future__ import annotations

import copy
import functools
import statistics
import time
from typing import Any

import torch

from benchmarks.fixtures import build_as_run, dims, engine_epoch, epoch_stage, load_splits
from benchmarks.markdown import met_cell, target_cell, times
from benchmarks.measure import figure, interleaved, medians
from benchmarks.sizes import Sizes
from kdprune.reporting.markdown import md_table

KD = {"temperature": 4.0, "alpha": 0.9}


def measure(sizes: Sizes) -> dict[str, Any]:
    """(b) One Hinton-KD epoch (cached / live teacher) vs one CE epoch of the same student."""
    from kdprune.data import TensorLoader
    from kdprune.distillation import CrossEntropyObjective, HintonObjective, compute_teacher_logits

    splits = load_splits(sizes)
    cpu, shape = torch.device("cpu"), dims(splits.train)
    loader = TensorLoader(splits.train, sizes.batch_size, cpu, shuffle=True, seed=0)
    student = build_as_run(sizes.kd_student, *shape)
    teacher = build_as_run(sizes.kd_teacher, *shape, seed=1)
    cache_seconds: list[float] = []

    def fill() -> torch.Tensor:
        start = time.perf_counter()
        logits = compute_teacher_logits(teacher, splits.train.images, batch_size=1024)
        cache_seconds.append(time.perf_counter() - start)
        return logits

    objectives = {
        "ce": CrossEntropyObjective(),
        "kd_cached": HintonObjective(**KD, teacher_logits=fill()),
        "kd_uncached": HintonObjective(**KD, student=student, teacher=teacher),
    }
    models = {name: copy.deepcopy(student) for name in objectives}
    stages = {name: epoch_stage(name, obj, sizes.kd_steps, cpu) for name, obj in objectives.items()}
    sides = {
        name: functools.partial(engine_epoch, models[name], loader, stages[name])
        for name in objectives
    }
    samples = interleaved(sides, sizes.kd_reps)
    fill()  # a second cache fill, for a median of two
    med = medians(samples)
    return figure(
        "kd",
        {
            "kd_cached_vs_ce_epoch": med["kd_cached"] / med["ce"],
            "kd_uncached_vs_ce_epoch": med["kd_uncached"] / med["ce"],
            "teacher_cache_fill_vs_ce_epoch": statistics.median(cache_seconds) / med["ce"],
        },
        epoch_seconds=med,
        samples=samples,
        cache_fill_seconds=cache_seconds,
        setup=f"student {sizes.kd_student}, teacher {sizes.kd_teacher}, {sizes.dataset}, batch "
        f"{sizes.batch_size}, "
        + ("full epochs" if sizes.kd_steps is None else f"{sizes.kd_steps} steps per epoch")
        + f", Hinton KD (T=4, alpha=0.9), {sizes.kd_reps} interleaved epochs per side",
    )


def summary(f: dict[str, Any]) -> list[list[str]]:
    """(b)'s rows of the summary table: figure, measured, target, met."""
    key = "kd_cached_vs_ce_epoch"
    return [
        [
            "(b) KD epoch / CE epoch time, cached teacher logits",
            times(f["ratios"][key]),
            target_cell(f["targets"][key], "×"),
            met_cell(f, key),
        ],
        [
            "(b) KD epoch / CE epoch time, teacher run every step",
            times(f["ratios"]["kd_uncached_vs_ce_epoch"]),
            "(reported)",
            "—",
        ],
    ]


def section(f: dict[str, Any]) -> list[str]:
    """(b) details."""
    s, r = f["epoch_seconds"], f["ratios"]
    return [
        "## (b) One KD epoch vs one cross-entropy epoch",
        "",
        f"Setup: {f['setup']}. All three run `kdprune.engine.train_epoch` on the same batches; KD "
        "uses `HintonObjective` with `teacher_logits` from `compute_teacher_logits` (cached) or "
        "with the teacher run on every batch (uncached).",
        "",
        *md_table(
            ["epoch", "seconds (median)", "vs CE"],
            [
                ["cross-entropy", f"{s['ce']:.2f}", "1.00×"],
                [
                    "Hinton KD, cached teacher logits",
                    f"{s['kd_cached']:.2f}",
                    f"**{times(r['kd_cached_vs_ce_epoch'])}**",
                ],
                [
                    "Hinton KD, teacher run every batch",
                    f"{s['kd_uncached']:.2f}",
                    times(r["kd_uncached_vs_ce_epoch"]),
                ],
            ],
        ),
        "",
        f"Filling the cache (one teacher pass over the training set, batch 1024) takes "
        f"{statistics.median(f['cache_fill_seconds']):.2f} s, "
        f"{times(r['teacher_cache_fill_vs_ce_epoch'])} a CE epoch, once per run. Reproduce: "
        f"`{f['command']}`.",
    ]
