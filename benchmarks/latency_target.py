"""(h) Latency targets: the measured speed-up a cut reaches against the one it was asked for, for
the uniform MACs cut (`unit=macs`), the uniform latency cut (`unit=latency`) and the
latency-allocated cut (`unit=latency allocation=latency`: per-group latency tables and a
knapsack, `kdprune.pruning.latency_allocation`) of the same target.

For each model (random weights) and target speed-up s, both cuts remove 1 - 1/s: the MACs cut of
the MACs, the latency cut of the latency measured on the target (ONNX Runtime, batch 64, one
thread by default: `kdprune.metrics.LatencyTarget`). Both cuts are saved as model files and
re-measured, with the dense model, interleaved, in a separate process (spawned: nothing of the
search's process, its warm sessions or its remembered reductions, carries over). A latency
target below the measured floor is refused by the pruner; the row says so and names the floor.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.compression import LATENCY_INPUTS
from benchmarks.fixtures import build, model_cfg
from benchmarks.machine import ort_version
from benchmarks.measure import figure
from benchmarks.sizes import Sizes
from kdprune.errors import ConfigError
from kdprune.metrics.latency_target import LatencyTarget

# (unit, allocation) of the cuts compared, in the table's order.
CUTS = (("macs", "uniform"), ("latency", "uniform"), ("latency", "latency"))


def target_of(sizes: Sizes) -> LatencyTarget:
    """The latency target of the figure: ONNX Runtime at the sizes' batch, threads and repeats."""
    return LatencyTarget(
        runtime="onnxruntime",
        batch_size=sizes.latency_target_batch,
        threads=sizes.threads,
        repeats=sizes.latency_target_repeats,
        warmup=2,
    )


def cut(
    dense: nn.Module,
    example: torch.Tensor,
    unit: str,
    ratio: float,
    target: LatencyTarget,
    allocation: str = "uniform",
    tables: Path | None = None,
) -> tuple[nn.Module, list, int | None]:
    """A copy of `dense` cut by `ratio` of its `unit` (L1, round_to auto, as the default
    structured method) with `allocation` (latency tables kept in `tables`): the model, its
    history and the rounding used."""
    import copy

    import torch_pruning as tp

    from kdprune.pruning import StructuredPruner

    pruned = copy.deepcopy(dense)
    pruner = StructuredPruner(
        pruned,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=1),
        ratio=ratio,
        unit=unit,
        round_to="auto",
        tolerance=0.04,
        allocation=allocation,
        latency=target if unit == "latency" else None,
        latency_tables=tables,
    )
    result = pruner.apply()
    return pruned.eval(), result.history, result.round_to


def remeasure(files: dict[str, str], target: dict[str, Any], shape: list[int]) -> dict[str, float]:
    """Median ms of each model file on the target, interleaved (run in a fresh process)."""
    from kdprune.pruning import load_model

    models = {name: load_model(path).eval() for name, path in files.items()}
    return LatencyTarget(**target).times_ms(models, shape)


def in_fresh_process(files: dict[str, str], target: LatencyTarget, shape: list[int]) -> dict:
    """`remeasure` in a spawned process."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        fields = {k: getattr(target, k) for k in LatencyTarget.__dataclass_fields__}
        return pool.submit(remeasure, files, fields, shape).result()


def model_rows(name: str, sizes: Sizes, folder: Path) -> list[dict[str, Any]]:
    """One row per (target speed-up, unit) of one model."""
    from kdprune.pruning import save_model

    c, s = LATENCY_INPUTS[name]
    cfg, example, target = model_cfg(name, c, s), torch.randn(1, c, s, s), target_of(sizes)
    dense = build(name, c, s).eval()
    files = {"dense": str(save_model(folder / f"{name}-dense.pt", dense, cfg))}
    rows: list[dict[str, Any]] = []
    for speedup in sizes.latency_target_speedups:
        for unit, allocation in CUTS:
            if allocation == "latency" and name not in sizes.latency_allocation_models:
                continue
            row = {"model": name, "target_speedup": speedup, "unit": unit, "allocation": allocation}
            try:
                model, history, round_to = cut(
                    dense, example, unit, 1 - 1 / speedup, target, allocation, folder / "tables"
                )
            except ConfigError as err:  # below the measured floor, or a step too coarse
                rows.append(row | {"refused": str(err)})
                continue
            key = f"{speedup:g}x-{unit}-{allocation}"
            files[key] = str(save_model(folder / f"{name}-{key}.pt", model, cfg, history))
            rows.append(row | {"key": key, "round_to": round_to})
    ms = in_fresh_process(files, target, [c, s, s])
    for row in rows:
        if "key" in row:
            achieved = ms["dense"] / ms[row["key"]]
            row |= {"dense_ms": ms["dense"], "cut_ms": ms[row["key"]], "achieved": achieved}
            row["closeness"] = 1.0 - abs(achieved / row["target_speedup"] - 1.0)
    return rows


def measure(sizes: Sizes) -> dict[str, Any]:
    """(h) Target vs achieved measured speed-up of the MACs cut and the latency cut."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kdprune-bench-latency-target-") as folder:
        for name in sizes.latency_target_models:
            rows += model_rows(name, sizes, Path(folder))
    ratios = {
        f"{r['model']}/{r['target_speedup']:g}x/latency/{r.get('allocation', 'uniform')}": r[
            "closeness"
        ]
        for r in rows
        if r["unit"] == "latency" and "closeness" in r
    }
    return figure("latency_target", ratios, rows=rows, setup=setup(sizes))


def setup(sizes: Sizes) -> str:
    """How (h) was measured, for BENCHMARKS.md."""
    t = target_of(sizes)
    return (
        f"StructuredPruner, L1 importance, `round_to: auto`, tolerance 4%; `unit=macs` "
        f"(uniform), `unit=latency` (uniform) and, for "
        f"{', '.join(sizes.latency_allocation_models)}, `unit=latency allocation=latency` (its "
        f"latency table built in the run) at ratio 1 − 1/s for s in "
        f"{list(sizes.latency_target_speedups)}; random weights; latency target: ONNX Runtime "
        f"{ort_version()} (CPU provider, graph optimisations on), batch {t.batch_size}, "
        f"{t.threads} thread(s), median of {t.repeats} interleaved runs after {t.warmup} "
        f"warm-up runs; both cuts and the dense model re-measured together in a fresh process"
    )
