"""The teacher stage: frozen, from a checkpoint, from the cache, or trained (then cached).

The same cache serves the dense trained network of the student's own architecture, the start of
`student_init=trained` (it is the teacher itself when both share the architecture).
"""

from __future__ import annotations

import copy
import functools
import hashlib
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
from kdprune.instantiation import config_dict
from kdprune.models import model_name
from kdprune.run_record import TEST_ACC, VAL_ACC
from kdprune.schedules.context import RunContext, build_model, load_state_dict_file

log = logging.getLogger("kdprune")


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (which exact weights a file holds)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class Teacher:
    """A frozen network, its accuracy, which weights it holds and how many epochs made them."""

    module: nn.Module
    metrics: dict[str, Any]
    weights: str  # e.g. "cache lenet5_wide-fashion_mnist-<key>.pt" or "checkpoint <sha256>"
    epochs: int | None  # epochs that trained these weights (None: unknown, a user's file)
    file: Path | None = None  # its cache file: its training-set logits are stored beside it
    checkpoint_sha256: str | None = None  # a user's checkpoint file: its hash, read once
    _train_logits: torch.Tensor | None = field(default=None, init=False, repr=False)

    def train_logits(
        self, images: torch.Tensor, batch_size: int, write: bool = True
    ) -> torch.Tensor:
        """Its logits for every training image, computed once per run; for a cached teacher,
        stored beside its file together with that file's hash (unless `write` is off: a rank
        other than 0), and reused only by that file."""
        if self._train_logits is None and self.file is not None:
            self._train_logits = self._stored(images)
        if self._train_logits is None:
            self._train_logits = compute_teacher_logits(self.module, images, batch_size=batch_size)
            if self.file is not None and write:
                stored = {"teacher_sha256": self.sha256}
                atomic_save({**stored, "logits": self._train_logits.cpu()}, self._logits_file)
        return self._train_logits

    @functools.cached_property
    def sha256(self) -> str | None:
        """The sha256 of the file its weights came from (cache or checkpoint; None: neither):
        which exact teacher a run used, what the report checks before pairing two runs."""
        if self.file is not None:
            return file_sha256(self.file)  # read once per run, however often it is asked
        return self.checkpoint_sha256

    @property
    def _logits_file(self) -> Path:
        if self.file is None:
            raise ValueError("a teacher without a file keeps no logits beside it")
        return self.file.with_suffix(".logits.pt")

    def _stored(self, images: torch.Tensor) -> torch.Tensor | None:
        try:
            stored = torch.load(self._logits_file, map_location=images.device, weights_only=True)
        except (FileNotFoundError, RuntimeError, EOFError):
            return None  # missing or unreadable: compute (and store) them again
        if not isinstance(stored, dict) or stored.get("teacher_sha256") != self.sha256:
            return None  # another teacher's logits (the teacher was retrained): never reused
        logits = stored.get("logits")
        ok = isinstance(logits, torch.Tensor) and logits.shape[0] == len(images)
        return logits if ok else None


def teacher_model_cfg(cfg: DictConfig) -> DictConfig:
    """The teacher's architecture: `teacher.model`, or the student's when that is null."""
    return cfg.teacher.model if cfg.teacher.model is not None else cfg.model


def teacher_spec(cfg: DictConfig, model_cfg: DictConfig, data_identity: str) -> dict[str, Any]:
    """Everything a trained dense network depends on, and nothing else (not device or logging):
    the architecture, the data set (its files too), the training recipe and the seed."""
    splits = config_dict(cfg.dataset.splits)
    splits.pop("root", None)  # in data_identity, with a hash of the files
    return {
        "model": OmegaConf.to_container(model_cfg, resolve=True),
        "dataset": {
            "name": cfg.dataset.name,
            "identity": data_identity,
            "splits": splits,
            "augment": OmegaConf.to_container(cfg.dataset.augment, resolve=True),
        },
        "epochs": int(cfg.teacher.epochs),
        "optimizer": OmegaConf.to_container(cfg.teacher.optimizer, resolve=True),
        "lr_scheduler": OmegaConf.to_container(cfg.teacher.lr_scheduler, resolve=True),
        "batch_size": int(cfg.trainer.batch_size),
        "label_smoothing": float(cfg.trainer.label_smoothing),
        "max_batches": cfg.trainer.max_batches,
        "select_epoch": cfg.trainer.get("select_epoch", "best_val"),
        "seed": int(cfg.teacher.seed),
        # channels_last on the CPU rounds differently; only then a key (so older files still hit)
        **({"channels_last": "always"} if cfg.trainer.get("channels_last") == "always" else {}),
    }


def train_teacher(ctx: RunContext) -> Teacher:
    """The frozen teacher: loaded from `teacher.checkpoint`, else the cached (or newly trained)
    dense network of the teacher's architecture."""
    cfg = ctx.cfg
    if not cfg.teacher.checkpoint:
        return dense_network(ctx, teacher_model_cfg(cfg))
    seed_everything(int(cfg.teacher.seed) * 1000 + 1)
    module = build_model(teacher_model_cfg(cfg), ctx.device, cfg.trainer.channels_last)
    with ctx.timed("teacher"):
        load_state_dict_file(module, cfg.teacher.checkpoint, "teacher")
        metrics = {**_accuracy(ctx, module), "source": "checkpoint"}
    sha256 = file_sha256(Path(cfg.teacher.checkpoint).expanduser())
    teacher = Teacher(module, metrics, f"checkpoint {sha256[:16]}", None, checkpoint_sha256=sha256)
    return _frozen(teacher)


def dense_network(ctx: RunContext, model_cfg: DictConfig) -> Teacher:
    """The dense network of `model_cfg` trained by the teacher's recipe: from the cache, or
    trained once (then cached) — shared by every run and sweep trial that needs it."""
    cfg = ctx.cfg
    seed_everything(int(cfg.teacher.seed) * 1000 + 1)
    module = build_model(model_cfg, ctx.device, cfg.trainer.channels_last)
    name = f"{model_name(model_cfg)}-{cfg.dataset.name}"
    cache, spec = TeacherCache(cfg.paths.cache_dir), teacher_spec(cfg, model_cfg, ctx.data_identity)
    with ctx.timed("teacher"):
        metrics, hit = cache.get_or_train(name, spec, module, lambda m: _fit(ctx, m), ctx.ranks)
    path = cache.path(name, spec)
    metrics = {**metrics, "source": "cache" if hit else "trained"}
    return _frozen(Teacher(module, metrics, f"cache {path.name}", int(cfg.teacher.epochs), path))


def _frozen(teacher: Teacher) -> Teacher:
    teacher.module.eval().requires_grad_(False)
    log.info(
        "%s (%s): val acc %.4f, test acc %.4f",
        teacher.weights,
        teacher.metrics["source"],
        teacher.metrics[VAL_ACC],
        teacher.metrics[TEST_ACC],
    )
    return teacher


def _accuracy(ctx: RunContext, module: nn.Module) -> dict[str, float]:
    return {split + "_acc": ctx.score(module, split)["acc"] for split in ("val", "test")}


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
