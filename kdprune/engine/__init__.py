"""The training engine: one train / evaluate loop, device choice, seeding and lr schedules."""

from kdprune.engine.process_setup import (
    keep_freed_memory,
    pick_device,
    process_settings,
    seed_everything,
)
from kdprune.engine.train import Stage, build_optimizer, evaluate, fit, train_epoch

__all__ = [
    "Stage",
    "build_optimizer",
    "evaluate",
    "fit",
    "keep_freed_memory",
    "pick_device",
    "process_settings",
    "seed_everything",
    "train_epoch",
]
