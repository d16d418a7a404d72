"""The orders of pruning and distillation (the `schedule` group) and the stages they are made of."""

from kdprune.schedules.orders import (
    GradualPruning,
    cubic_sparsity,
    distill_then_prune,
    joint,
    prune_then_distill,
)

__all__ = ["GradualPruning", "cubic_sparsity", "distill_then_prune", "joint", "prune_then_distill"]
