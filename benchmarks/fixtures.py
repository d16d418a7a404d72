"""Models, data and engine stages the figures measure, built as a kdprune run builds them."""

from __future__ import annotations

import functools

import torch
from omegaconf import OmegaConf
from torch import nn

from benchmarks.measure import timed
from benchmarks.sizes import Sizes
from kdprune.paths import CONF_DIR


def model_cfg(name: str, in_channels: int, image_size: int, classes: int = 10) -> dict:
    """conf/model/<name>.yaml resolved for a data set of the given shape (as a run saves it)."""
    root = OmegaConf.create(
        {
            "dataset": {
                "num_classes": classes,
                "in_channels": in_channels,
                "image_size": image_size,
            },
            "model": OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml"),
        }
    )
    return OmegaConf.to_container(root.model, resolve=True)


def build(name: str, in_channels: int, image_size: int, seed: int = 0) -> nn.Module:
    """A freshly initialised model from its config."""
    from kdprune.models import build as build_from_cfg

    torch.manual_seed(seed)
    return build_from_cfg(model_cfg(name, in_channels, image_size))


def build_as_run(name: str, in_channels: int, image_size: int, seed: int = 0) -> nn.Module:
    """A model as a CPU run builds it (`build_model`: its memory format choice included)."""
    from kdprune.schedules.context import build_model

    torch.manual_seed(seed)
    return build_model(model_cfg(name, in_channels, image_size), torch.device("cpu"))


def load_splits(sizes: Sizes):
    """The benchmark's data set, in memory."""
    from kdprune.data import digits, fashion_mnist

    return digits() if sizes.dataset == "digits" else fashion_mnist(sizes.data_dir)


def dims(split) -> tuple[int, int]:
    """(in_channels, image_size) of a split's images."""
    return split.images.shape[1], split.images.shape[-1]


def epoch_stage(name: str, objective, steps: int | None, device: torch.device, amp: bool = False):
    """A one-epoch engine `Stage` (AdamW, cosine schedule, no progress bar) of at most `steps`."""
    from kdprune.engine import Stage
    from kdprune.engine.lr_schedules import cosine

    return Stage(
        name=name,
        epochs=1,
        objective=objective,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
        lr_schedule=cosine(),
        device=device,
        amp=amp,
        progress=False,
        max_batches=steps,
    )


def engine_epoch(model: nn.Module, loader, stage) -> float:
    """Seconds for one `train_epoch` of kdprune's engine (a fresh optimizer, as `fit` builds)."""
    from kdprune.engine import build_optimizer, train_epoch

    optimizer = build_optimizer(stage, model)
    steps = len(loader) if stage.max_batches is None else min(len(loader), stage.max_batches)
    return timed(lambda: train_epoch(model, loader, stage, optimizer, 0, steps))
