"""The compression interface shared by every `prune_method`, its result, and config checks."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from hydra.errors import InstantiationException
from torch import Tensor, nn

from kdprune.config import instantiate
from kdprune.errors import ConfigError
from kdprune.models import classifier_path

UNITS = ("channels", "params", "macs")
ALLOCATIONS = ("uniform", "global")


@dataclass(frozen=True)
class PruneResult:
    """What one compression step did.

    `history` is Torch-Pruning's pruning history (`[module_path, is_out_channel, indices]` per
    group, JSON-serialisable) for structured pruning, or the decomposition steps
    (`{"path", "kind", "ranks"}` per layer) for low-rank methods, which
    `kdprune.pruning.save_model` stores so `load_model` can rebuild the changed architecture; None
    for mask-based methods, whose effect lives in the weights alone. `pruning_ratio` is the
    channel ratio handed to Torch-Pruning (for a params/macs target, the one the search settled
    on); None where it does not apply. `round_to` is the multiple the kept widths were rounded to
    (what `auto` resolved to); None where they were not rounded.
    """

    history: list[Any] | None
    pruning_ratio: float | None
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    round_to: int | None = None


class Pruner(Protocol):
    """A pruning step bound to one model: the object a `prune_method.pruner` node builds.

    The class attribute `kind` says what pruning does to the model: `structured` (channels are
    removed: fewer MACs, a real speed-up), `masked` (weights are zeroed in place, shapes stay) or
    `low_rank` (layers are replaced by factorised chains: fewer MACs, new layers).

    Built as `instantiate(cfg.prune_method.pruner)(model=..., example_inputs=..., calibration=...,
    loss_fn=...)`; the constructor checks everything it can (raising ConfigError) before any long
    work. `regularize(model)` runs after each `loss.backward()` while training (a no-op for most
    methods); `apply()` compresses the bound model in place and says what it did. The static
    `check_options(**options)` checks the node's arguments without a model (`validate` calls it).
    """

    kind: str

    @staticmethod
    def check_options(**options: Any) -> None:
        """Raise ConfigError if an option is out of range; ignore options it does not know."""
        ...

    def regularize(self, model: nn.Module) -> None:
        """Add a sparsity-inducing term to the gradients of `model` (after backward)."""
        ...

    def apply(self) -> PruneResult:
        """Compress the bound model in place."""
        ...


def check_ratio(ratio: Any, what: str = "ratio") -> float:
    """Return `ratio` as a float, or raise ConfigError unless it lies in [0, 1)."""
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not math.isfinite(ratio):
        raise ConfigError(f"prune_method {what} must be a number in [0, 1), got {ratio!r}.")
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"prune_method {what} must lie in [0, 1), got {ratio}.")
    return float(ratio)


def check_choice(value: Any, choices: tuple[str, ...], what: str) -> str:
    """Return `value`, or raise ConfigError unless it is one of `choices`."""
    if value not in choices:
        raise ConfigError(
            f"prune_method {what} must be one of {', '.join(choices)}; got {value!r}."
        )
    return str(value)


def ignored_module_paths(model: nn.Module, paths: Iterable[str]) -> tuple[str, ...]:
    """Return the module paths never to prune: `paths` (checked) plus the model's classifier."""
    names = tuple(str(p) for p in paths)
    for name in names:
        try:
            model.get_submodule(name)
        except AttributeError:
            raise ConfigError(
                f"ignored layer {name!r} is not a module of {type(model).__name__}."
            ) from None
    return (*names, classifier_path(model))


def is_ignored(name: str, ignored: Iterable[str]) -> bool:
    """True if module `name` is one of `ignored` or sits inside one of them."""
    return any(name == path or name.startswith(path + ".") for path in ignored)


WEIGHTED_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


def weighted_layers(model: nn.Module, ignored: Iterable[str]) -> list[tuple[str, nn.Module]]:
    """The conv and linear layers a mask-based pruner may prune: (path, module), not ignored."""
    return [
        (path, module)
        for path, module in model.named_modules()
        if isinstance(module, WEIGHTED_TYPES) and not is_ignored(path, ignored)
    ]


def require_weighted_layers(model: nn.Module, ignored: tuple[str, ...]) -> None:
    """Raise ConfigError if `ignored` leaves no conv or linear layer to prune."""
    if not weighted_layers(model, ignored):
        raise ConfigError(
            f"nothing left to prune in {type(model).__name__}: every conv and linear layer "
            f"is ignored ({', '.join(ignored)})."
        )


def move_inputs(example_inputs: Tensor, model: nn.Module) -> Tensor:
    """Return `example_inputs` on the device of the model's parameters."""
    param = next(model.parameters(), None)
    return example_inputs if param is None else example_inputs.to(param.device)


def _pruner_factory(prune_cfg: Mapping[str, Any]) -> Any:
    node = prune_cfg.get("pruner")
    if node is None or "_target_" not in node:
        raise ConfigError("prune_method.pruner needs a _target_ naming the pruner class.")
    try:
        return instantiate(node)
    except InstantiationException as err:
        raise ConfigError(f"prune_method.pruner cannot be built: {err}") from None


def pruner_class(prune_cfg: Mapping[str, Any]) -> type:
    """The class a `prune_method.pruner` node builds (ConfigError if the node cannot be built)."""
    factory = _pruner_factory(prune_cfg)
    return getattr(factory, "func", factory)


def validate(prune_cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError if a `prune_method` config is out of range; cheap, needs no model.

    Checks the top-level `ratio` and `unit`, builds the `pruner` node (a partial, so this imports
    its classes and builds its importance criterion without touching a model) and runs the
    pruner class's own `check_options` on the node's arguments.
    """
    check_ratio(prune_cfg.get("ratio"))
    check_choice(prune_cfg.get("unit"), UNITS, "unit")
    factory = _pruner_factory(prune_cfg)
    check_options = getattr(getattr(factory, "func", factory), "check_options", None)
    if check_options is not None:
        check_options(**getattr(factory, "keywords", {}))
