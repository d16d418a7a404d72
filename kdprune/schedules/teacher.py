"""The teacher stage: frozen, from a checkpoint, from the cache, or trained (then cached)."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from kdprune.cache import TeacherCache, atomic_save
from kdprune.distillation import CrossEntropyObjective, compute_teacher_logits
from kdprune.engine import fit, seed_everything
from kdprune.models import model_name
from kdprune.schedules.context import RunContext, build_model, load_state_dict_file

log = logging.getLogger("kdprune")


@dataclass
class Teacher:
    """A frozen teacher, its accuracy, and where its training-set logits are stored (if cached)."""

    module: nn.Module
    metrics: dict[str, Any]
    logits_file: Path | None = None  # beside its cache file; None for a teacher not cached
    _train_logits: torch.Tensor | None = field(default=None, init=False, repr=False)

    def train_logits(self, images: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Its logits for every training image, computed once per run (and stored beside a cached
        teacher, so every later run of a sweep reuses them)."""
        if self._train_logits is None:
            self._train_logits = self._stored(images) if self.logits_file else None
        if self._train_logits is None:
            self._train_logits = compute_teacher_logits(self.module, images, batch_size=batch_size)
            if self.logits_file is not None:
                atomic_save(self._train_logits.cpu(), self.logits_file)
        return self._train_logits

    def _stored(self, images: torch.Tensor) -> torch.Tensor | None:
        try:
            logits = torch.load(self.logits_file, map_location=images.device, weights_only=True)
        except (FileNotFoundError, RuntimeError, EOFError):
            return None  # missing or unreadable: compute (and store) them again
        ok = isinstance(logits, torch.Tensor) and logits.shape[0] == len(images)
        return logits if ok else None


def teacher_model_cfg(cfg: DictConfig) -> DictConfig:
    """The teacher's architecture: `teacher.model`, or the student's when that is null."""
    return cfg.teacher.model if cfg.teacher.model is not None else cfg.model


def teacher_spec(cfg: DictConfig) -> dict[str, Any]:
    """Everything a trained teacher depends on, and nothing else (not paths, device or logging)."""
    splits = OmegaConf.to_container(cfg.dataset.splits, resolve=True)
    splits.pop("root", None)
    return {
        "model": OmegaConf.to_container(teacher_model_cfg(cfg), resolve=True),
        "dataset": {
            "name": cfg.dataset.name,
            "splits": splits,
            "augment": OmegaConf.to_container(cfg.dataset.augment, resolve=True),
        },
        "epochs": int(cfg.teacher.epochs),
        "optimizer": OmegaConf.to_container(cfg.teacher.optimizer, resolve=True),
        "lr_scheduler": OmegaConf.to_container(cfg.teacher.lr_scheduler, resolve=True),
        "batch_size": int(cfg.trainer.batch_size),
        "label_smoothing": float(cfg.trainer.label_smoothing),
        "max_batches": cfg.trainer.max_batches,
        "seed": int(cfg.teacher.seed),
    }


def train_teacher(ctx: RunContext) -> Teacher:
    """The frozen teacher: loaded from a checkpoint, from the cache, or trained (then cached)."""
    cfg = ctx.cfg
    model_cfg = teacher_model_cfg(cfg)
    seed_everything(int(cfg.teacher.seed) * 1000 + 1)
    module = build_model(model_cfg, ctx.device, cfg.trainer.channels_last)
    logits_file = None
    with ctx.timed("teacher"):
        if cfg.teacher.checkpoint:
            load_state_dict_file(module, cfg.teacher.checkpoint, "teacher")
            metrics = {**_accuracy(ctx, module), "source": "checkpoint"}
        else:
            name = f"{model_name(model_cfg)}-{cfg.dataset.name}"
            cache, spec = TeacherCache(cfg.paths.cache_dir), teacher_spec(cfg)
            metrics, hit = cache.get_or_train(name, spec, module, lambda m: _fit(ctx, m))
            logits_file = cache.path(name, spec).with_suffix(".logits.pt")
            metrics = {**metrics, "source": "cache" if hit else "trained"}
    module.eval().requires_grad_(False)
    log.info(
        "teacher (%s): val acc %.4f, test acc %.4f",
        metrics["source"],
        metrics["val_acc"],
        metrics["test_acc"],
    )
    return Teacher(module, metrics, logits_file)


def _accuracy(ctx: RunContext, module: nn.Module) -> dict[str, float]:
    return {
        "val_acc": ctx.score(module, "val")["acc"],
        "test_acc": ctx.score(module, "test")["acc"],
    }


def _fit(ctx: RunContext, module: nn.Module) -> dict[str, Any]:
    t = ctx.cfg.teacher
    objective = CrossEntropyObjective(ctx.cfg.trainer.label_smoothing)
    stage = ctx.stage("teacher", t.epochs, objective, t.optimizer, t.lr_scheduler)
    start = time.perf_counter()
    train = copy.copy(ctx.loaders.train)  # the same batches, shuffled by the teacher's own seed
    train.seed = int(t.seed)
    history = fit(module, train, ctx.loaders.val, stage)
    return {
        **_accuracy(ctx, module),
        "epochs": int(t.epochs),
        "train_seconds": time.perf_counter() - start,
        "history": history,
    }
