"""The orders of pruning and distillation (the `schedule` group) and the stages they are made of.

Names are imported from their modules on first use: the command line's checks and the report
read the orders' names (`kdprune.schedules.names`) without loading the stages or torch.
"""

import importlib
from typing import Any

_HOMES = {
    "DistillThenPrune": "orders",
    "GradualPruning": "gradual",
    "Joint": "orders",
    "ORDER_NAMES": "names",
    "Order": "orders",
    "PruneThenDistill": "orders",
    "cubic_sparsity": "gradual",
    "distill_then_prune": "orders",
    "joint": "orders",
    "order_of": "orders",
    "prune_then_distill": "orders",
}


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use (PEP 562)."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


__all__ = sorted(_HOMES)
