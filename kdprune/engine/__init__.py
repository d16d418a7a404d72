"""The training engine: one train / evaluate loop, device choice, seeding and lr schedules."""

from kdprune.engine.runtime import pick_device, seed_everything
from kdprune.engine.train import Stage, build_optimizer, evaluate, fit, train_epoch

__all__ = [
    "Stage",
    "build_optimizer",
    "evaluate",
    "fit",
    "pick_device",
    "seed_everything",
    "train_epoch",
]
