"""What every stage of a run shares: config, device, data, tracker, timings; the teacher."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from kdprune.cache import TeacherCache
from kdprune.config import instantiate
from kdprune.data import Loaders
from kdprune.engine import Stage, evaluate, fit, seed_everything
from kdprune.errors import ConfigError
from kdprune.tracking import Tracker

log = logging.getLogger("kdprune")


@dataclass
class RunContext:
    """The shared state of one run, passed explicitly to every stage (no globals)."""

    cfg: DictConfig
    device: torch.device
    loaders: Loaders
    tracker: Tracker
    run_dir: Path
    timings: dict[str, float] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    teacher_logits: torch.Tensor | None = None  # cached teacher outputs on the training set
    teacher_logits_of: nn.Module | None = None  # ... and the teacher they came from
    cached_teacher: nn.Module | None = None  # the teacher loaded from / written to the cache ...
    teacher_file: Path | None = None  # ... and its cache file (its logits are stored beside it)
    after_prune_val_acc: float | None = None

    @property
    def example_inputs(self) -> torch.Tensor:
        """One input of the data set's shape, on the device (for MACs counting and tracing)."""
        d = self.cfg.dataset
        return torch.randn(1, d.in_channels, d.image_size, d.image_size, device=self.device)

    def record(self, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        self.tracker.log(entry)
        log.info(
            "%s epoch %d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1fs",
            entry["stage"],
            entry["epoch"],
            entry["train_loss"],
            entry["train_acc"],
            entry["val_loss"],
            entry["val_acc"],
            entry["seconds"],
        )

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Add the wall time of a block to `timings[name]` (seconds)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def seed(self, offset: int) -> None:
        """Reseed before a stage, so its numbers do not depend on whether earlier stages ran or
        came from the cache."""
        seed_everything(int(self.cfg.seed) * 1000 + offset)

    def stage(
        self,
        name: str,
        epochs: int,
        objective,
        optimizer: DictConfig | None = None,
        lr_scheduler: DictConfig | None = None,
        **kwargs: Any,
    ) -> Stage:
        """A training stage with the run's trainer settings."""
        t = self.cfg.trainer
        return Stage(
            name=name,
            epochs=int(epochs),
            objective=objective,
            optimizer=instantiate(optimizer if optimizer is not None else self.cfg.optimizer),
            lr_schedule=instantiate(
                lr_scheduler if lr_scheduler is not None else self.cfg.lr_scheduler
            ),
            device=self.device,
            amp=bool(t.amp),
            progress=bool(t.progress),
            max_batches=t.max_batches,
            log=self.record,
            **kwargs,
        )

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """Accuracy and loss of a model on `val` or `test`, timed as the `evaluate` stage."""
        with self.timed("evaluate"):
            return self.score(model, split)

    def score(self, model: nn.Module, split: str) -> dict[str, float]:
        """`evaluate` without timing, for use inside another timed stage (no double counting)."""
        loader = getattr(self.loaders, split)
        t = self.cfg.trainer
        return evaluate(model, loader, self.device, bool(t.amp), t.max_batches)


def model_name(model_cfg: DictConfig) -> str:
    """A model config's short name: the last part of its `_target_`."""
    return str(model_cfg._target_).rsplit(".", 1)[-1]


def build_model(
    model_cfg: DictConfig, device: torch.device, channels_last: bool = True
) -> nn.Module:
    """Instantiate a model config on the device (channels_last memory format on CUDA)."""
    model = instantiate(model_cfg).to(device)
    if channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


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


def load_state_dict_file(model: nn.Module, path: str, what: str) -> None:
    """Load a user's state_dict file (data only) into a model, with one-line errors."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{what} checkpoint {str(file)!r} does not exist")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        model.load_state_dict(state)
    except Exception as err:  # a wrong file shows as many error types; all mean the same to a user
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"{what} checkpoint {str(file)!r} does not fit the configured model: {first}"
        ) from err


def train_teacher(ctx: RunContext) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen teacher: loaded from a checkpoint, from the cache, or trained (then cached)."""
    cfg = ctx.cfg
    model_cfg = teacher_model_cfg(cfg)
    seed_everything(int(cfg.teacher.seed) * 1000 + 1)
    teacher = build_model(model_cfg, ctx.device, cfg.trainer.channels_last)
    with ctx.timed("teacher"):
        if cfg.teacher.checkpoint:
            load_state_dict_file(teacher, cfg.teacher.checkpoint, "teacher")
            metrics = {
                "val_acc": ctx.score(teacher, "val")["acc"],
                "test_acc": ctx.score(teacher, "test")["acc"],
                "source": "checkpoint",
            }
        else:
            name = f"{model_name(model_cfg)}-{cfg.dataset.name}"
            cache, spec = TeacherCache(cfg.paths.cache_dir), teacher_spec(cfg)
            metrics, hit = cache.get_or_train(name, spec, teacher, lambda m: _fit_teacher(ctx, m))
            ctx.cached_teacher, ctx.teacher_file = teacher, cache.path(name, spec)
            metrics = {**metrics, "source": "cache" if hit else "trained"}
    teacher.eval().requires_grad_(False)
    log.info(
        "teacher (%s): val acc %.4f, test acc %.4f",
        metrics["source"],
        metrics["val_acc"],
        metrics["test_acc"],
    )
    return teacher, metrics


def _fit_teacher(ctx: RunContext, teacher: nn.Module) -> dict[str, Any]:
    from kdprune.distillation import CrossEntropyObjective

    t = ctx.cfg.teacher
    stage = ctx.stage(
        "teacher",
        t.epochs,
        CrossEntropyObjective(ctx.cfg.trainer.label_smoothing),
        t.optimizer,
        t.lr_scheduler,
    )
    start = time.perf_counter()
    train = copy.copy(ctx.loaders.train)  # the same batches, shuffled by the teacher's own seed
    train.seed = int(ctx.cfg.teacher.seed)
    history = fit(teacher, train, ctx.loaders.val, stage)
    return {
        "val_acc": ctx.score(teacher, "val")["acc"],
        "test_acc": ctx.score(teacher, "test")["acc"],
        "epochs": int(t.epochs),
        "train_seconds": time.perf_counter() - start,
        "history": history,
    }
