"""Mask-based pruning through `torch.nn.utils.prune`: weights are zeroed, nothing is removed.

Any `torch.nn.utils.prune.BasePruningMethod` subclass plugs in through the `method` node, given
in YAML as a `_partial_: true` node of the class with its other arguments (e.g. `n`, `dim`), or
as the class itself. A method whose constructor takes `amount` (all of torch's do) receives
`ratio` as its amount, so overriding `ratio` alone is enough; `EveryOtherPruningMethod` below, the
tutorial's custom example, takes none and always masks half.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn
from torch.nn.utils import prune

from kdprune.errors import ConfigError
from kdprune.pruning.base import (
    ALLOCATIONS,
    UNITS,
    MaskedPruner,
    PruneResult,
    check_choice,
    check_ratio,
    ignored_module_paths,
    require_weighted_layers,
    weighted_layers,
)

# The unit a method's ratio counts, by its PRUNING_TYPE: single weights, or whole channels.
UNIT_OF_PRUNING_TYPE = {"unstructured": "params", "structured": "channels"}


class EveryOtherPruningMethod(prune.BasePruningMethod):
    """Mask every other entry of a tensor (the custom method of the PyTorch pruning tutorial)."""

    PRUNING_TYPE = "unstructured"
    FIXED_RATIO = 0.5  # it takes no amount; check_options holds `ratio` to this

    def compute_mask(self, t: Tensor, default_mask: Tensor) -> Tensor:
        """Return `default_mask` with entries 0, 2, 4, ... of the flattened tensor set to 0."""
        mask = default_mask.clone()
        mask.view(-1)[::2] = 0
        return mask


def _split_method(method: Any) -> tuple[type[prune.BasePruningMethod], tuple, dict[str, Any]]:
    """Return (class, args, kwargs) from a BasePruningMethod class or a partial of one."""
    if isinstance(method, functools.partial):
        cls, args, kwargs = method.func, method.args, dict(method.keywords)
    else:
        cls, args, kwargs = method, (), {}
    if not (isinstance(cls, type) and issubclass(cls, prune.BasePruningMethod)):
        raise ConfigError(
            f"prune_method method must be a torch.nn.utils.prune.BasePruningMethod subclass, "
            f"got {cls!r}."
        )
    return cls, args, kwargs


def _takes_amount(cls: type[prune.BasePruningMethod]) -> bool:
    return "amount" in inspect.signature(cls.__init__).parameters


class UnstructuredPruner(MaskedPruner):
    """Mask conv and linear weights with a `torch.nn.utils.prune` method, in place.

    `allocation: uniform` applies the method layer by layer; `global` ranks all weights together
    (`prune.global_unstructured`, unstructured methods only). The classifier and `ignored_layers`
    are left dense. `unit` must match what the method counts: `params` for unstructured methods,
    `channels` for structured ones such as LnStructured. Masks stay attached (so fine-tuning keeps
    pruned weights at zero); call `make_permanent` before export, `save_model` folds them itself.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Tensor | None = None,
        *,
        method: Any,
        ratio: float,
        unit: str = "params",
        allocation: str = "uniform",
        ignored_layers: Iterable[str] = (),
        calibration: Any = None,
        loss_fn: Any = None,
    ) -> None:
        self.check_options(method=method, ratio=ratio, unit=unit, allocation=allocation)
        self.model, self.ratio = model, float(ratio)
        self.method, self.args, self.kwargs = _split_method(method)
        if _takes_amount(self.method):
            self.kwargs["amount"] = self.ratio
        self.global_pruning = allocation == "global"
        self.ignored = ignored_module_paths(model, ignored_layers)
        require_weighted_layers(model, self.ignored)

    @staticmethod
    def check_options(
        method: Any = None,
        ratio: Any = None,
        unit: Any = "params",
        allocation: Any = "uniform",
        **_: Any,
    ) -> None:
        """Raise ConfigError if an option is out of range or does not fit the method."""
        check_ratio(ratio)
        check_choice(unit, UNITS, "unit")
        check_choice(allocation, ALLOCATIONS, "allocation")
        cls, _args, kwargs = _split_method(method)
        if "amount" in kwargs:
            raise ConfigError(
                f"prune_method method sets amount {kwargs['amount']}; set ratio instead, "
                "it is passed on as the amount."
            )
        fixed = getattr(cls, "FIXED_RATIO", None)
        if fixed is not None and ratio != fixed:
            raise ConfigError(f"{cls.__name__} always prunes {fixed} of the weights, not {ratio}.")
        # Every BasePruningMethod subclass sets PRUNING_TYPE; torch's annotations leave it out.
        pruning_type: Any = getattr(cls, "PRUNING_TYPE", None)
        counted = UNIT_OF_PRUNING_TYPE.get(pruning_type)
        if unit != counted:
            raise ConfigError(
                f"{cls.__name__} is {pruning_type} and counts {counted}, "
                f"so prune_method unit must be {counted}, not {unit}."
            )
        if allocation == "global" and pruning_type != "unstructured":
            raise ConfigError(
                f"global allocation needs an unstructured method, not {cls.__name__}."
            )

    def apply(self) -> PruneResult:
        """Attach masks to every target weight; nothing to replay, so the history is None."""
        start = time.perf_counter()
        targets = self._targets()
        if self.global_pruning:
            prune.global_unstructured(targets, pruning_method=self.method, **self.kwargs)
        else:
            for module, name in targets:
                self.method.apply(module, name, *self.args, **self.kwargs)
        return PruneResult(None, None, time.perf_counter() - start)

    def _targets(self) -> list[tuple[nn.Module, str]]:
        return [(module, "weight") for _, module in weighted_layers(self.model, self.ignored)]
