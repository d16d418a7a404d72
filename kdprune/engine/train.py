"""One train / evaluate loop for every stage: teacher training, distillation and fine-tuning.

A stage hands `fit` an *objective* `objective(model, x, y, idx) -> (loss, logits)` (cross-entropy,
or a KD loss that looks teacher outputs up by sample index) and an optimizer factory. The learning
rate is a pure function of the step (`lr_schedule(progress) -> multiplier`), so an optimizer can be
rebuilt mid-stage — after channels are removed — without losing the schedule.

In a run over several processes the loaders carry the ranks (`loader.ranks`): the model trains
wrapped in DistributedDataParallel (wrapped again after a step hook changes it, once every rank
is checked to have made the same change), each epoch ends with rank 0's buffers (BatchNorm
statistics) on every rank, and losses and accuracies are summed over the ranks, so every rank
records the same numbers. With the run's saved `state` (`kdprune.engine.checkpoints`), each
epoch's training state is saved, and a stage a stopped run had begun resumes where it stopped.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from kdprune import preemption
from kdprune.distributed import Ranks
from kdprune.engine.objective import Objective
from kdprune.errors import NonFiniteLossError, Preempted
from kdprune.run_record import VAL_ACC, VAL_LOSS

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
# Called after every optimizer step with (model, global step); returns True when it changed the
# model's parameters (pruned channels), so the engine rebuilds the optimizer.
StepHook = Callable[[nn.Module, int], bool]

CHECK_EVERY = 50  # steps between non-finite checks and progress-bar refreshes (each one syncs)


@dataclass
class Stage:
    """What `fit` needs besides the model and data: how to optimise, for how long, how to report."""

    name: str
    epochs: int
    objective: Objective
    optimizer: OptimizerFactory
    lr_schedule: Callable[[float], float]
    device: torch.device
    # The model's weights are kept in this format (a pruning step may hand back contiguous ones).
    memory_format: torch.memory_format = torch.contiguous_format
    amp: bool = True
    select_on_val: bool = True
    progress: bool | None = True  # None: a bar only on a terminal (tqdm's own check)
    max_batches: int | None = None
    after_backward: Callable[[nn.Module], None] | None = None
    step_hooks: list[StepHook] = field(default_factory=list)
    log: Callable[[dict], None] | None = None
    # Called after every optimizer step with (epoch, step), both from 0 (kdprune.faults).
    on_step: Callable[[int, int], None] | None = None
    # The run's saved training state (`kdprune.engine.checkpoints.RunState`; None: not kept):
    # the stage saves its state after each epoch and resumes from what a stopped run left.
    state: Any = None


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA (fp16 where bf16 is missing); a no-op elsewhere."""
    if not enabled or device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def ranks_of(loader) -> Ranks:
    """The ranks a loader shards its batches over (one process for a plain iterable)."""
    return getattr(loader, "ranks", None) or Ranks()


def extra_parameters(stage: Stage) -> list[nn.Parameter]:
    """The objective's own trainable parameters (a feature KD loss's adapters), if any."""
    return list(getattr(stage.objective, "extra_parameters", lambda: [])())


def keep_format(model: nn.Module, stage: Stage) -> None:
    """Put the model's weights back in the stage's memory format (in place: the parameter
    objects, and so an optimizer's references to them, stay the same)."""
    if stage.memory_format is torch.channels_last:
        model.to(memory_format=torch.channels_last)


def build_optimizer(stage: Stage, model: nn.Module) -> torch.optim.Optimizer:
    """A fresh optimizer over the model's and the objective's trainable parameters."""
    extra = extra_parameters(stage)
    params = [p for p in model.parameters() if p.requires_grad] + list(extra)
    optimizer = stage.optimizer(params)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return optimizer


def _set_lr(optimizer: torch.optim.Optimizer, multiplier: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * multiplier


def _check_finite(total: torch.Tensor, stage: Stage, epoch: int, step: int) -> None:
    if not torch.isfinite(total).item():
        raise NonFiniteLossError(
            f"{stage.name}: loss became NaN or infinite in epoch {epoch + 1} by step {step + 1}; "
            "lower the learning rate or check the KD temperature",
            stage=stage.name,
            epoch=epoch + 1,
            step=step + 1,
        )


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader,
    device: torch.device,
    amp: bool = True,
    max_batches: int | None = None,
    keep_predictions: bool = False,
) -> dict[str, Any]:
    """Top-1 accuracy and mean cross-entropy of `model` on a loader; with `keep_predictions`,
    also `predictions`: the predicted class of each image by its index in the split (a CPU
    int64 tensor, -1 for images left out by `max_batches`)."""
    model.eval()
    ranks = ranks_of(loader)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, indices, classes = 0, [], []
    for b, (x, y, idx) in enumerate(loader):
        if max_batches is not None and b >= max_batches:
            break
        with autocast(device, amp):
            logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        predicted = logits.argmax(1)
        correct += (predicted == y).sum()
        seen += len(y)
        if keep_predictions:
            indices.append(idx.cpu())
            classes.append(predicted.cpu())
    if ranks.active:  # each rank saw its share of every batch: the whole split's sums
        count = torch.tensor(seen, device=device)
        loss_sum, correct, count = ranks.all_sum(loss_sum, correct, count)
        seen = int(count.item())
    out: dict[str, Any] = {
        "acc": correct.item() / max(seen, 1),
        "loss": loss_sum.item() / max(seen, 1),
    }
    if keep_predictions:
        predictions = torch.full((loader.num_samples,), -1, dtype=torch.long)
        if indices:
            predictions[torch.cat(indices)] = torch.cat(classes)
        out["predictions"] = ranks.all_max(predictions.to(device)).cpu()
    return out


def train_epoch(
    model: nn.Module,
    loader,
    stage: Stage,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    total_steps: int,
) -> tuple[dict[str, float], torch.optim.Optimizer]:
    """One pass over the training loader; returns mean loss / accuracy, how often a step hook's
    change of the architecture rebuilt the optimizer (`optimizer_resets`), and the optimizer in
    use."""
    model.train()
    loader.set_epoch(epoch)
    ranks = ranks_of(loader)
    net, extra = ranks.replicate(model), extra_parameters(stage)
    steps = len(loader) if stage.max_batches is None else min(len(loader), stage.max_batches)
    scaler = torch.amp.GradScaler(
        enabled=stage.amp and stage.device.type == "cuda" and not torch.cuda.is_bf16_supported()
    )
    loss_sum = torch.zeros((), device=stage.device)
    correct = torch.zeros((), device=stage.device, dtype=torch.long)
    seen, resets = 0, 0
    bar = _bar(stage, epoch, steps)
    for step, (x, y, idx) in enumerate(loader):
        if step >= steps:
            break
        global_step = epoch * steps + step
        _set_lr(optimizer, stage.lr_schedule(global_step / max(total_steps, 1)))
        with autocast(stage.device, stage.amp):
            loss, logits = stage.objective(net, x, y, idx)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        ranks.average_gradients(extra)  # DDP averaged the model's own gradients in backward
        if stage.after_backward is not None:
            stage.after_backward(model)
        scaler.step(optimizer)
        scaler.update()
        loss_sum += loss.detach().float() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if stage.on_step is not None:
            stage.on_step(epoch, step)
        if any([hook(model, global_step + 1) for hook in stage.step_hooks]):
            ranks.agree_on_model(model, f"{stage.name} step {global_step + 1}")
            keep_format(model, stage)
            optimizer, net = build_optimizer(stage, model), ranks.replicate(model)
            resets += 1
        if (step + 1) % CHECK_EVERY == 0 or step + 1 == steps:
            _check_finite(ranks.all_sum(loss_sum)[0], stage, epoch, step)
            bar.set_postfix(
                loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}"
            )
        bar.update()
    bar.close()
    ranks.broadcast_state(model, buffers_only=True)  # rank 0's BatchNorm statistics on all
    return {**_means(ranks, loss_sum, correct, seen), "optimizer_resets": resets}, optimizer


def _bar(stage: Stage, epoch: int, steps: int) -> tqdm:
    return tqdm(
        total=steps,
        desc=f"{stage.name} {epoch + 1}/{stage.epochs}",
        leave=False,
        disable=None if stage.progress is None else not stage.progress,
        dynamic_ncols=True,
    )


def _means(
    ranks: Ranks, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int
) -> dict[str, float]:
    """An epoch's mean loss and accuracy over every rank's share of its batches."""
    count = torch.tensor(seen, device=loss_sum.device)
    loss_sum, correct, count = ranks.all_sum(loss_sum, correct, count)
    seen = int(count.item())
    return {"loss": loss_sum.item() / max(seen, 1), "acc": correct.item() / max(seen, 1)}


@dataclass
class Progress:
    """Where a stage stands between epochs: what `fit` keeps, and what a checkpoint saves."""

    epoch: int = 0  # epochs done
    history: list[dict] = field(default_factory=list)
    best_acc: float = -1.0
    best_state: dict[str, torch.Tensor] | None = None


def fit(model: nn.Module, train_loader, val_loader, stage: Stage) -> list[dict]:
    """Train for `stage.epochs`; with `select_on_val`, end on the epoch with the best val accuracy.

    Returns one record per epoch (train loss/acc, val loss/acc, lr, optimizer resets,
    whether the stage could select its epoch, seconds). With a checkpoint, a stage the
    interrupted run finished is restored instead of trained, and one it began goes on from its
    last finished epoch.
    """
    checkpoint = stage.state.stage(stage.name, model) if stage.state is not None else None
    if checkpoint is not None and (done := checkpoint.finished(model, stage)) is not None:
        train_loader.set_epoch(max(stage.epochs - 1, 0))  # where training left the loader
        _replay(stage, done)
        return done
    keep_format(model, stage)
    optimizer = build_optimizer(stage, model)
    steps = (
        len(train_loader)
        if stage.max_batches is None
        else min(len(train_loader), stage.max_batches)
    )
    total_steps = stage.epochs * steps
    progress = Progress()
    if checkpoint is not None:
        progress = checkpoint.resume(model, optimizer, stage)
        train_loader.set_epoch(max(progress.epoch - 1, 0))  # where training left the loader
        _replay(stage, progress.history)
    # Whether this stage can end on its best validation epoch: not when step hooks change the
    # architecture (an earlier state_dict may not fit), nor with select_epoch=last.
    selectable = bool(stage.select_on_val and not stage.step_hooks)
    for epoch in range(progress.epoch, stage.epochs):
        start = time.perf_counter()
        train, optimizer = train_epoch(model, train_loader, stage, optimizer, epoch, total_steps)
        val = evaluate(model, val_loader, stage.device, stage.amp, stage.max_batches)
        record = {
            "stage": stage.name,
            "epoch": epoch + 1,
            "train_loss": train["loss"],
            "train_acc": train["acc"],
            VAL_LOSS: val["loss"],
            VAL_ACC: val["acc"],
            "lr": optimizer.param_groups[0]["lr"],
            "optimizer_resets": train["optimizer_resets"],
            "selectable": selectable,
            "seconds": time.perf_counter() - start,
        }
        progress.history.append(record)
        progress.epoch = epoch + 1
        if stage.select_on_val and val["acc"] > progress.best_acc:
            progress.best_acc, progress.best_state = val["acc"], copy.deepcopy(model.state_dict())
        if checkpoint is not None:
            checkpoint.save_epoch(model, optimizer, stage, progress)
        if stage.log is not None:
            stage.log(record)
        if _stop_requested(ranks_of(train_loader), stage.device):
            raise Preempted("SIGTERM")
    if progress.best_state is not None and selectable:
        model.load_state_dict(progress.best_state)
    if checkpoint is not None:
        checkpoint.save_finished(model, stage, progress.history)
    return progress.history


def _stop_requested(ranks: Ranks, device: torch.device) -> bool:
    """Whether SIGTERM asked any rank to stop (`kdprune.preemption`): all stop at one epoch."""
    if not ranks.active:
        return preemption.requested()
    flag = torch.tensor(int(preemption.requested()), device=device)
    return bool(ranks.all_max(flag).item())


def _replay(stage: Stage, history: list[dict]) -> None:
    """Log the epochs a checkpoint restored, as if they had just been trained."""
    if stage.log is not None:
        for record in history:
            stage.log(record)
