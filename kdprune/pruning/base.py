"""The compression interface shared by every `prune_method`, its result, and config checks."""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hydra.errors import InstantiationException
from torch import Tensor, nn

from kdprune.errors import ConfigError
from kdprune.instantiation import instantiate
from kdprune.models import classifier_path

UNITS = ("channels", "params", "macs")  # what every pruner's `ratio` may be a fraction of
MEASURED_UNITS = ("latency",)  # a measured latency: structured cuts only (`prune_method.latency`)
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


# `rebuild(**overrides)`: a pruner of the same configuration bound to the same model, with
# `overrides` of its options and what the pruner that asks for it carries (see `carried`).
Rebuild = Callable[..., "Pruner"]


class Pruner(ABC):
    """A compression step bound to one model: what every `prune_method.pruner` class is.

    The class attribute `kind` says what pruning does to the model: `structured` (channels are
    removed: fewer MACs, a real speed-up), `masked` (weights are zeroed in place, shapes stay) or
    `low_rank` (layers are replaced by factorised chains: fewer MACs, new layers).
    `learns_while_training` says it needs the student's gradients before it can cut (movement
    scores): an order must train the student first.

    Built as `instantiate(cfg.prune_method.pruner)(model=..., example_inputs=..., calibration=...,
    loss_fn=...)`; the constructor checks everything it can (raising ConfigError) before any long
    work, `check_options(**options)` checks the node's arguments without a model (`validate`
    calls it) and `check_target()` what needs the model. Then:

    - one cut: `plan()` says what `apply()` would leave, `apply()` compresses the bound model in
      place and says what it did;
    - part of the way (the joint order): `begin_gradual()` before training fixes where the cut
      ends, then `step_toward(before, after, target, rebuild)` at each pruning point;
    - while the student trains: `training_hook()` runs after each `loss.backward()` (None if the
      pruner learns nothing), and `carried()` is what pruners built later in the same order
      share with this one (movement scores), handed to `rebuild`.

    The methods but `apply` and `step_toward` have defaults for a pruner that needs no more.
    """

    kind: ClassVar[str]
    learns_while_training: ClassVar[bool] = False
    # The multiple the last cut rounded kept widths to (None: not rounded, or not structured).
    round_to: int | None = None

    @staticmethod
    def check_options(**options: Any) -> None:
        """Raise ConfigError if an option is out of range; ignore options it does not know."""
        return None

    def check_target(self) -> None:
        """Raise ConfigError now if the target cannot be met on the bound model (a params / MACs
        target is searched here); the default has nothing to search."""
        return None

    def plan(self) -> Any:
        """The shapes `apply` would leave, on a copy or from the weights alone (structured: output
        widths per layer; low-rank: ranks per layer); None where the cut keeps every shape."""
        return None

    @abstractmethod
    def apply(self) -> PruneResult:
        """Compress the bound model in place."""

    def regularize(self, model: nn.Module) -> None:
        """Add a sparsity-inducing term to the gradients of `model` (after backward); no-op."""
        return None

    def training_hook(self) -> Callable[[nn.Module], None] | None:
        """What to run after each backward while the student trains before the cut (`regularize`
        where it does something), or None."""
        return None

    def carried(self) -> dict[str, Any]:
        """Constructor arguments that pruners built later in the same order must share with this
        one (what it learns while training), so it carries over from one pruning step to the
        next; empty by default."""
        return {}

    def begin_gradual(self) -> None:
        """Fix where a gradual cut ends before its training starts (structured: the one-shot
        widths of the dense model); by default nothing is fixed in advance."""
        return None

    @abstractmethod
    def step_toward(
        self, before: float, after: float, target: float, rebuild: Rebuild
    ) -> PruneResult | None:
        """Prune the bound model from sparsity `before` to `after` on the way to `target` (the
        joint order's schedule; at `after == target` the cut equals `apply`'s); `rebuild` builds
        a pruner of the same configuration with other options. None when nothing changed."""


class MaskedPruner(Pruner):
    """A pruner that zeroes weights through masks (shapes, params and MACs stay): a gradual cut
    masks the share of the weights still left that brings the sparsity to the next step's."""

    kind = "masked"  # weights are zeroed in place; shapes, params and MACs stay

    def step_toward(
        self, before: float, after: float, target: float, rebuild: Rebuild
    ) -> PruneResult | None:
        """Mask 1 - (1 - after) / (1 - before) of the weights left, which compounds to exactly
        `after`; None when that is nothing (a rounding of the schedule)."""
        relative = 1 - (1 - after) / (1 - before)
        if relative <= 1e-6:
            return None
        return rebuild(ratio=relative).apply()


def scheduled_fraction(after: float, target: float) -> float:
    """How far a gradual cut has gone: sparsity `after` as a fraction of `target` (1 at 0)."""
    return after / target if target > 0 else 1.0


def check_ratio(ratio: Any, what: str = "ratio") -> float:
    """Return `ratio` as a float, or raise ConfigError unless it lies in [0, 1)."""
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not math.isfinite(ratio):
        raise ConfigError(f"prune_method {what} must be a number in [0, 1), got {ratio!r}.")
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"prune_method {what} must lie in [0, 1), got {ratio}.")
    return float(ratio)


def check_tolerance(tolerance: Any) -> None:
    """Raise ConfigError unless a target search's `tolerance` lies in (0, 0.5)."""
    if not isinstance(tolerance, int | float) or not 0.0 < tolerance < 0.5:
        raise ConfigError(f"prune_method tolerance must lie in (0, 0.5), got {tolerance}.")


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


def weighted_layers(
    model: nn.Module, ignored: Iterable[str]
) -> list[tuple[str, nn.modules.conv._ConvNd | nn.Linear]]:
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


def pruner_class(prune_cfg: Mapping[str, Any]) -> type[Pruner]:
    """The Pruner class a `prune_method.pruner` node builds (ConfigError if the node cannot be
    built or names a class that is not a `Pruner`)."""
    return _class_of(_pruner_factory(prune_cfg))


def _class_of(factory: Any) -> type[Pruner]:
    cls = factory.func if isinstance(factory, functools.partial) else factory
    if not (isinstance(cls, type) and issubclass(cls, Pruner)):
        raise ConfigError(
            f"prune_method.pruner must name a kdprune.pruning.Pruner subclass, got {cls!r}."
        )
    return cls


def validate(prune_cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError if a `prune_method` config is out of range; cheap, needs no model.

    Checks the top-level `ratio` and `unit`, builds the `pruner` node (a partial, so this imports
    its classes and builds its importance criterion without touching a model) and runs the
    pruner class's own `check_options` on the node's arguments.
    """
    check_ratio(prune_cfg.get("ratio"))
    check_choice(prune_cfg.get("unit"), UNITS + MEASURED_UNITS, "unit")
    factory = _pruner_factory(prune_cfg)
    options = factory.keywords if isinstance(factory, functools.partial) else {}
    _class_of(factory).check_options(**options)
