"""(g) One training epoch on two processes (DDP, gloo, one thread each) vs one process with one
thread, and its Markdown.

Both sides run `kdprune.engine.train_epoch` for the same steps of the same global batch: the
two-process side on the sharded loader (each rank half of every batch, gradients averaged by
DistributedDataParallel, sums over the ranks at the end), the one-process side on the whole
batches. The two ranks are spawned afresh for each sample and meet through a FileStore in a
temporary folder; their start-up and a warm-up epoch are not timed, the epoch between two
barriers is.
"""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.fixtures import build_as_run, dims, engine_epoch, epoch_stage, load_splits
from benchmarks.markdown import met_cell, target_cell, times
from benchmarks.measure import figure, interleaved, medians
from benchmarks.sizes import Sizes

KEY = "two_ranks_vs_one_epoch"
WORLD = 2


def _epoch(sizes: Sizes, ranks=None) -> tuple[Any, Any, Any]:
    """A model, its loader (sharded over `ranks`) and a one-epoch stage of `ddp_steps` steps."""
    from kdprune.data import TensorLoader
    from kdprune.distillation import CrossEntropyObjective

    cpu = torch.device("cpu")
    splits = load_splits(sizes)
    loader = TensorLoader(splits.train, sizes.batch_size, cpu, True, seed=0, ranks=ranks)
    stage = epoch_stage("bench", CrossEntropyObjective(), sizes.ddp_steps, cpu)
    return build_as_run(sizes.train_model, *dims(splits.train)), loader, stage


def _rank(rank: int, sizes: Sizes, folder: Path) -> None:
    """One rank of the two-process side: warm up, then time one epoch between barriers."""
    from kdprune.distributed import current
    from kdprune.engine import keep_freed_memory

    torch.set_num_threads(sizes.threads)
    keep_freed_memory(sizes.keep_freed_memory_mb)  # as every kdprune process, and the parent
    store = dist.FileStore(str(folder / "store"), WORLD)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=600))  # fmt: skip
    model, loader, stage = _epoch(sizes, current())
    engine_epoch(model, loader, stage)  # warm-up (allocator, oneDNN primitive caches)
    dist.barrier()
    seconds = engine_epoch(model, loader, stage)
    dist.barrier()
    if rank == 0:
        (folder / "seconds").write_text(repr(seconds))
    dist.destroy_process_group()


def two_ranks(sizes: Sizes) -> float:
    """Seconds of one epoch on two freshly spawned ranks (rank 0's clock)."""
    with tempfile.TemporaryDirectory(prefix="kdprune-bench-ddp-") as folder:
        mp.spawn(_rank, args=(sizes, Path(folder)), nprocs=WORLD, join=True)
        return float((Path(folder) / "seconds").read_text())


def measure(sizes: Sizes) -> dict[str, Any]:
    """(g) Seconds per epoch: two ranks of one thread each / one process of one thread."""
    torch.set_num_threads(sizes.threads)
    model, loader, stage = _epoch(sizes)
    engine_epoch(model, loader, stage)  # warm-up
    sides = {"two_ranks": lambda: two_ranks(sizes), "one_process": lambda: engine_epoch(
        model, loader, stage)}  # fmt: skip
    samples = interleaved(sides, sizes.ddp_reps)
    med = medians(samples)
    steps = min(sizes.ddp_steps, len(loader))
    return figure(
        "ddp",
        {KEY: med["two_ranks"] / med["one_process"]},
        epoch_seconds=med,
        samples=samples,
        setup=f"{sizes.train_model} on {sizes.dataset}, global batch {sizes.batch_size}, "
        f"{steps} steps per epoch, AdamW, in-memory tensors, {sizes.threads} thread(s) per "
        f"process, {sizes.ddp_reps} interleaved samples per side",
    )


def summary(f: dict[str, Any]) -> list[list[str]]:
    """(g)'s row of the summary table."""
    return [
        [
            "(g) epoch time, 2 processes (DDP, gloo) / 1 process",
            times(f["ratios"][KEY]),
            target_cell(f["targets"][KEY], "×"),
            met_cell(f, KEY),
        ]
    ]


def section(f: dict[str, Any]) -> list[str]:
    """(g) details."""
    s = f["epoch_seconds"]
    return [
        "## (g) One run on two processes: a training epoch with DDP vs one process",
        "",
        f"Setup: {f['setup']}. Both sides run `kdprune.engine.train_epoch` on the same global "
        "batches; the two ranks (gloo, spawned afresh for each sample, start-up and a warm-up "
        "epoch not timed) each train on half of every batch, DistributedDataParallel averaging "
        "their gradients.",
        "",
        f"Seconds per epoch (median): two ranks {s['two_ranks']:.2f}, one process "
        f"{s['one_process']:.2f} → **{times(f['ratios'][KEY])}**. Reproduce: `{f['command']}`.",
        *_spread_lines(f.get("samples")),
    ]


def _spread_lines(samples: dict[str, list[float]] | None) -> list[str]:
    """How far each side's epochs spread (records written before they were kept have none)."""
    if not samples:
        return []
    return [
        "",
        f"The samples spread: two ranks {_spread(samples['two_ranks'])} s, one process "
        f"{_spread(samples['one_process'])} s (two busy processes on two cores and a single one "
        "both vary from epoch to epoch here; the ratio is of the medians).",
    ]


def _spread(samples: list[float]) -> str:
    return f"{min(samples):.2f}–{max(samples):.2f}"
