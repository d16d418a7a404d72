"""The stages orders are made of: build a student, distill / fine-tune it, prune it, measure it.

Each stage returns what it measured; the order passes it on to the next stage that needs it.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdprune.distributed import MainRankImportance
from kdprune.engine import fit
from kdprune.instantiation import instantiate
from kdprune.metrics import file_size_bytes, ledger
from kdprune.metrics.latency_target import LatencyTarget, latency_record
from kdprune.predictions import write_predictions
from kdprune.pruning import PruneResult, make_permanent, pruner_class, save_model
from kdprune.run_record import TEST_ACC, TEST_LOSS, VAL_ACC, VAL_LOSS
from kdprune.schedules.context import RunContext
from kdprune.schedules.teacher_stage import Teacher

log = logging.getLogger("kdprune")

MODEL_FILE = "model.pt"
DENSE_FILE = "dense.pt"


@dataclass(frozen=True)
class PruneStep:
    """What the prune stage did: the pruner's result and the validation accuracy around it."""

    result: PruneResult
    val_acc_before: float
    val_acc_after: float


def teacher_logits(ctx: RunContext, teacher: Teacher) -> torch.Tensor | None:
    """The teacher's logits for every training sample, computed once — when inputs are
    deterministic (no augmentation) and the data sit in memory; else None (run the teacher)."""
    train = ctx.loaders.train
    if not (train.deterministic and hasattr(train, "images")):
        return None
    batch_size = int(ctx.cfg.trainer.eval_batch_size)
    if teacher.file is None:  # nothing to share: every rank runs the teacher
        with ctx.timed("teacher_logits"):
            return teacher.train_logits(train.images, batch_size)
    # Rank 0 computes (and stores) them once; the other ranks then read its file.
    with ctx.timed("teacher_logits"), ctx.ranks.main_first():
        return teacher.train_logits(train.images, batch_size, write=ctx.ranks.is_main)


def objective(ctx: RunContext, student: nn.Module, teacher: Teacher | None):
    """The configured KD objective for this student; its class says whether it uses the teacher
    (plain cross-entropy for `kd: none` does not)."""
    factory = instantiate(ctx.cfg.kd.objective)
    used = teacher if teacher is not None and factory.func.needs_teacher else None
    cached = teacher_logits(ctx, used) if used is not None else None
    x, _, _ = next(iter(ctx.loaders.val))
    return factory(
        student=student,
        teacher=used.module if used is not None else None,
        teacher_logits=cached,
        label_smoothing=float(ctx.cfg.trainer.label_smoothing),
        example_input=x[:2],
    )


def calibration_batches(ctx: RunContext, count: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A few training batches for data-driven criteria (Taylor, Hessian): whole batches on every
    rank, so every rank scores the same data."""
    train = ctx.loaders.train
    batches = []
    for x, y, _ in train.unsharded() if ctx.ranks.active else train:
        batches.append((x, y))
        if len(batches) >= count:
            break
    return batches


def build_pruner(
    ctx: RunContext, model: nn.Module, carried: dict[str, Any] | None = None, **overrides: Any
):
    """The configured `prune_method` pruner bound to `model` (overrides replace config values;
    `carried` objects, e.g. an earlier pruner's learned scores, replace those the config builds).
    Over several ranks, its importance criterion's scores are rank 0's on every rank."""
    factory = instantiate(ctx.cfg.prune_method.pruner, **overrides)
    importance = getattr(factory, "keywords", {}).get("importance")
    if ctx.ranks.active and importance is not None:
        factory = functools.partial(factory, importance=MainRankImportance(importance))
    return factory(
        model=model,
        example_inputs=ctx.example_inputs,
        calibration=calibration_batches(ctx),
        loss_fn=F.cross_entropy,
        **(carried or {}),
    )


def train(
    ctx: RunContext,
    name: str,
    model: nn.Module,
    teacher: Teacher | None,
    epochs: int,
    after_backward=None,
    step_hooks=(),
    select_on_val: bool = True,
) -> list[dict]:
    """Train `model` with the KD objective (CE when teacher is None) for `epochs`."""
    if epochs <= 0:
        return []
    stage = ctx.stage(
        name,
        epochs,
        objective(ctx, model, teacher),
        after_backward=after_backward,
        step_hooks=list(step_hooks),
        select_on_val=select_on_val,
    )
    with ctx.timed(name):
        return fit(model, ctx.loaders.train, ctx.loaders.val, stage)


def prune(ctx: RunContext, model: nn.Module, pruner=None) -> PruneStep:
    """Prune `model` in place to the configured target; measure val accuracy before and after."""
    before = ctx.evaluate(model, "val")["acc"]
    with ctx.timed("prune"):
        result = (pruner or build_pruner(ctx, model)).apply()
        ctx.ranks.agree_on_model(model, "pruning")
    after = ctx.evaluate(model, "val")["acc"]
    log.info(
        "pruned (%s, ratio %s %s): val acc %.4f -> %.4f in %.2fs",
        ctx.cfg.prune_method.name,
        ctx.cfg.prune_method.ratio,
        ctx.cfg.prune_method.unit,
        before,
        after,
        result.seconds,
    )
    return PruneStep(result, before, after)


def finish(
    ctx: RunContext,
    dense: nn.Module,
    compressed: nn.Module,
    history: list[list[Any]] | None,
    after_prune_val_acc: float | None,
    round_to: int | None = None,
) -> dict[str, Any]:
    """Save the compressed model, measure the ledger (with the multiple the cut rounded widths
    to) and the final val / test accuracy. Over several ranks, every rank checks it holds the
    same model and evaluates its share; rank 0 alone writes the files and times the model."""
    cfg = ctx.cfg
    make_permanent(compressed)
    by_rank = ctx.ranks.agree_on_model(compressed, "the last cut")
    files = _write_and_measure(ctx, dense, compressed, history, round_to)
    val = ctx.evaluate(compressed, "val")
    test = ctx.evaluate(compressed, "test", keep_predictions=True)
    if ctx.ranks.is_main:
        num_classes = int(cfg.dataset.num_classes)
        files["test_predictions_file"] = write_predictions(
            ctx.run_dir, test["predictions"], num_classes
        ).name
    return {
        "method": cfg.prune_method.name,
        "kind": pruner_class(cfg.prune_method).kind,
        "kd": cfg.kd.name,
        "target_ratio": float(cfg.prune_method.ratio),
        "unit": cfg.prune_method.unit,
        **files,
        "architecture_sha256": by_rank[0],
        "architecture_sha256_by_rank": by_rank,
        "after_prune_val_acc": after_prune_val_acc,
        VAL_ACC: val["acc"],
        TEST_ACC: test["acc"],
        VAL_LOSS: val["loss"],
        TEST_LOSS: test["loss"],
        "model_file": str(ctx.run_dir / MODEL_FILE),
    }


def _write_and_measure(
    ctx: RunContext,
    dense: nn.Module,
    compressed: nn.Module,
    history: list[list[Any]] | None,
    round_to: int | None,
) -> dict[str, Any]:
    """Rank 0: write model.pt and dense.pt and measure the ledger; the other ranks: nothing."""
    if not ctx.ranks.is_main:
        return {}
    cfg = ctx.cfg
    path = save_model(
        ctx.run_dir / MODEL_FILE,
        compressed.cpu(),
        cfg.model,
        history,
        extra={"order": cfg.schedule.name, "prune_method": cfg.prune_method.name},
    )
    compressed.to(ctx.device)
    dense_path = save_model(ctx.run_dir / DENSE_FILE, copy.deepcopy(dense).cpu(), cfg.model)
    with ctx.timed("measure"):
        sizes = ledger(
            copy.deepcopy(dense).cpu().eval(),
            copy.deepcopy(compressed).cpu().eval(),
            ctx.example_inputs.cpu(),
            repeats=int(cfg.measure.repeats),
            warmup=int(cfg.measure.warmup),
            num_threads=cfg.measure.get("threads"),
            round_to=round_to,
        )
        if cfg.prune_method.get("unit") == "latency":  # the target the cut was searched on
            sizes |= latency_record(
                LatencyTarget.of(cfg.prune_method.get("latency")),
                float(cfg.prune_method.ratio),
                copy.deepcopy(dense).cpu().eval(),
                copy.deepcopy(compressed).cpu().eval(),
                tuple(ctx.example_inputs.shape[1:]),
            )
    return {
        **sizes,
        "file_size_bytes": file_size_bytes(path),
        "dense_file_size_bytes": file_size_bytes(dense_path),
    }
