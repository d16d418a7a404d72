"""Structured (channel) pruning with Torch-Pruning: the model really shrinks."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch_pruning as tp
from torch import Tensor, nn
from torch.nn import functional as F

from kdprune.errors import ConfigError
from kdprune.metrics.latency_target import LatencyTarget
from kdprune.models.counting import count, measure, reduction
from kdprune.pruning.base import (
    Pruner,
    PruneResult,
    Rebuild,
    ignored_module_paths,
    move_inputs,
    scheduled_fraction,
)
from kdprune.pruning.calibration import Batches, LossFn, autograd_enabled
from kdprune.pruning.graph import (
    bound_ratios,
    keeping,
    layer_widths,
    plain_history,
    prunable_groups,
    replay_history,
    scheduled_widths,
)
from kdprune.pruning.latency_allocation import latency_cut
from kdprune.pruning.latency_table import LatencyTable
from kdprune.pruning.masks import clone_model
from kdprune.pruning.memo import REDUCTIONS, uniform_cut_key
from kdprune.pruning.rounding import candidate_roundings, first_reaching
from kdprune.pruning.search import TargetSearch, below_floor, unreachable
from kdprune.pruning.structured_options import check_inputs, check_structured_options
from kdprune.pruning.structured_search import search_ratio

__all__ = ["StructuredPruner", "layer_widths", "replay_history"]

SCAN_POINTS = 20  # channel ratios tried when `round_to` is set
# A measured candidate costs an export and a timed run, not a count: a coarser scan.
LATENCY_SCAN_POINTS = 10


class StructuredPruner(Pruner):
    """Remove whole channels with a Torch-Pruning importance criterion, in place.

    `ratio` means, by `unit`: `channels` the fraction of prunable channels removed (Torch-Pruning's
    pruning_ratio); `params` / `macs` the fraction of the model's parameters / MACs removed, found
    by bisecting the channel ratio until the count is within `tolerance` (absolute) of the target;
    `latency` the fraction of the latency measured on the `latency` target removed (a
    `kdprune.metrics.LatencyTarget` or its options: runtime, batch_size, threads, repeats,
    warmup), searched alike; below the measured floor (the latency of the largest cut) it refuses.
    `allocation` is `uniform` (every layer loses the same fraction) or `global` (one ranking over
    all layers); `max_layer_ratio` caps any layer. `layer_ratios` (a ratio file or a mapping,
    module path -> channel ratio, see `kdprune.pruning.layer_ratios`) sets the ratio of the
    layers it names (unit channels, uniform allocation). The classifier and `ignored_layers`
    (module paths) keep their output channels. `round_to` keeps every pruned width a multiple of
    it; `auto` picks the CPU's channel block (`cpu_flags`, default this machine's) that still
    reaches the target (see `kdprune.pruning.rounding`); `round_to` holds the value the last cut
    used. Candidates are pruned on copies; the chosen history is then replayed on `model`, which
    is left untouched if anything fails.
    """

    kind = "structured"  # channels are removed: fewer MACs, a real speed-up

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Tensor,
        *,
        importance: Callable[..., Tensor],
        ratio: float,
        unit: str = "channels",
        allocation: str = "uniform",
        max_layer_ratio: float = 0.9,
        round_to: int | str | None = None,
        cpu_flags: Iterable[str] | None = None,
        iterative_steps: int = 1,
        ignored_layers: Iterable[str] = (),
        layer_ratios: Any = None,
        tolerance: float = 0.02,
        latency: Any = None,
        latency_tables: str | None = None,
        max_search_steps: int = 12,
        calibrate: Callable[[nn.Module, Batches, LossFn], None] | None = None,
        regularizer: Any = None,
        calibration: Batches | None = None,
        loss_fn: LossFn | None = None,
    ) -> None:
        self.check_options(
            ratio=ratio,
            unit=unit,
            allocation=allocation,
            max_layer_ratio=max_layer_ratio,
            round_to=round_to,
            iterative_steps=iterative_steps,
            tolerance=tolerance,
            layer_ratios=layer_ratios,
            latency=latency,
        )
        check_inputs(model, importance, calibrate is not None and calibration is None)
        self.model, self.example_inputs = model, example_inputs
        self.importance, self.ratio, self.unit = importance, float(ratio), unit
        self.global_pruning, self.allocation = allocation == "global", allocation
        self.max_layer_ratio = float(max_layer_ratio)
        self.roundings = candidate_roundings(round_to, cpu_flags)
        # What the last cut rounded to; before a cut, `auto` has not chosen yet.
        self.round_to = self.roundings[0] if len(self.roundings) == 1 else None
        self.iterative_steps, self.tolerance = int(iterative_steps), float(tolerance)
        self.max_search_steps = int(max_search_steps)
        self.calibrate, self.regularizer = calibrate, regularizer
        # Never None where `calibrate` is set (checked above); unused where it is not.
        self.calibration: Batches = calibration if calibration is not None else ()
        self.loss_fn = loss_fn or F.cross_entropy
        self.ignored = ignored_module_paths(model, ignored_layers)
        self.layer_ratios = bound_ratios(model, layer_ratios, self.ignored)
        self.latency = LatencyTarget.of(latency) if unit == "latency" else None
        # `allocation: latency`'s per-group latency tables, kept in the `latency_tables` folder.
        self.latency_table = LatencyTable(self.latency, latency_tables) if self.latency else None
        self.allocated: dict[str, Any] = {}  # what the last latency-allocated cut chose
        self.reduction_of = self._reduction_function(unit, example_inputs)
        # A gradual cut's widths: the model's before it and the one-shot cut's (`begin_gradual`).
        self._dense: dict[str, int] = {}
        self._final: dict[str, int] = {}
        self._check_prunable()

    check_options = staticmethod(check_structured_options)

    def _reduction_function(
        self, unit: str, example_inputs: Tensor
    ) -> Callable[[nn.Module, nn.Module], float] | None:
        """(dense, cut) -> the reduction a params/macs/latency target asks for (channels: none)."""
        if unit == "channels":
            return None
        if self.latency is not None:
            return self.latency.reduction(tuple(example_inputs.shape[1:]))
        return reduction(measure(unit, example_inputs))  # no model needed

    def check_target(self) -> None:
        """Search a params/macs cut now, on these weights: a target rounding misses fails here."""
        if self.unit != "channels":
            self.plan()

    def regularize(self, model: nn.Module) -> None:
        """Apply the configured sparsity regularizer to `model`'s gradients (no-op if none)."""
        if self.regularizer is not None:
            self.regularizer.regularize(model)

    def training_hook(self) -> Callable[[nn.Module], None] | None:
        """`regularize` when a regularizer is configured (BN-scale sparsity, movement scores)."""
        return self.regularize if self.regularizer is not None else None

    def carried(self) -> dict[str, Any]:
        """The regularizer, shared with the pruners of later steps (movement scores learned)."""
        return {} if self.regularizer is None else {"regularizer": self.regularizer}

    def begin_gradual(self) -> None:
        """Fix the gradual cut's ends: the model's widths now and those of its one-shot cut."""
        self._dense = layer_widths(self.model)
        self._final = self.plan()

    def step_toward(
        self, before: float, after: float, target: float, rebuild: Rebuild
    ) -> PruneResult | None:
        """Move every layer from its dense width towards its one-shot width, the fraction
        `after / target` of the way (exact widths, so the last step lands on the cut)."""
        widths = scheduled_widths(self._dense, self._final, scheduled_fraction(after, target))
        pruner = rebuild(ratio=0.0, unit="channels")
        if not isinstance(pruner, StructuredPruner):
            raise TypeError(f"rebuild gave a {type(pruner).__name__}, not a StructuredPruner")
        return pruner.apply_widths(widths)

    def apply(self) -> PruneResult:
        """Prune the bound model in place and return the replayable history."""
        start = time.perf_counter()
        history, ratio = self._one_shot()
        replay_history(self.model, self.example_inputs, history)
        seconds = time.perf_counter() - start
        return PruneResult(history, ratio, seconds, dict(self.allocated), round_to=self.round_to)

    def plan(self) -> dict[str, int]:
        """The widths `apply` would leave, computed on a copy: module path -> output channels
        (features) of every conv and linear layer. The bound model is not touched."""
        history, _ = self._one_shot()
        planned = clone_model(self.model)
        replay_history(planned, self.example_inputs, history)
        return layer_widths(planned)

    def apply_widths(self, widths: dict[str, int]) -> PruneResult:
        """Prune the bound model in place until no layer is wider than `widths` (module path ->
        output channels), removing its least important channels; exact, unlike a ratio, which
        Torch-Pruning rounds per layer. Gradual pruning steps towards `plan()` with this."""
        start = time.perf_counter()
        current = layer_widths(self.model)
        ratios = {
            path: keeping(width, widths[path])
            for path, width in current.items()
            if path in widths and widths[path] < width
        }
        history = self.prune_copy(0.0, None, by_layer=ratios)[1] if ratios else []
        replay_history(self.model, self.example_inputs, history)
        return PruneResult(history, None, time.perf_counter() - start)

    def _one_shot(self) -> tuple[list[list[Any]], float]:
        """The history and channel ratio of the configured cut of the bound model, with the
        first rounding that reaches the target (kept in `round_to`)."""
        if self.ratio == 0 and not self.layer_ratios:
            self.round_to = None
            return [], 0.0
        cut: Callable[[int | None], tuple[list[list[Any]], float]]
        if self.unit == "channels":
            cut = functools.partial(self._channel_cut, reference={})
        elif self.allocation == "latency":
            cut = self._latency_allocated
        else:
            cut = self._search
        (history, ratio), self.round_to = first_reaching(self.roundings, cut)
        return history, ratio

    def _latency_allocated(self, round_to: int | None) -> tuple[list[list[Any]], float]:
        """The history of the `allocation: latency` cut and the fraction of the groups' channels
        it removes (`kdprune.pruning.latency_allocation`); what it chose goes to `allocated`."""
        history, self.allocated = latency_cut(self, round_to)
        return history, self.allocated["channel_ratio"]

    def _channel_cut(
        self, round_to: int | None, reference: dict[str, float]
    ) -> tuple[list[list[Any]], float]:
        """The history and ratio of the cut at the channel ratio, rounded to `round_to`. Where
        `auto` tries roundings, ConfigError if rounding moves the cut's MACs reduction more than
        `tolerance` from the unrounded cut's (a layer left whole); `reference` keeps that one."""
        candidate, history = self.prune_copy(self.ratio, round_to)
        if round_to is None or len(self.roundings) == 1:
            return history, self.ratio
        x = self.example_inputs
        dense = count(self.model, x, "macs")
        if "macs" not in reference:
            reference["macs"] = count(self.prune_copy(self.ratio, None)[0], x, "macs")
        moved = abs(count(candidate, x, "macs") - reference["macs"]) / dense
        if moved > self.tolerance:
            raise ConfigError(
                f"rounding to {round_to} channels moves the MACs reduction of a {self.ratio} "
                f"channel cut by {moved:.1%} (tolerance {self.tolerance:.1%})."
            )
        return history, self.ratio

    def _check_prunable(self) -> None:
        """Raise ConfigError if nothing is prunable or a params/macs target is out of reach."""
        groups = prunable_groups(self.model, self.example_inputs, self.ignored)
        # Gradient-based criteria score every group once calibrated; the others can be asked now.
        if self.calibrate is None and all(self.importance(group) is None for group in groups):
            raise ConfigError(
                f"{type(self.importance).__name__} scores no prunable layer of "
                f"{type(self.model).__name__} (BN-scale importance needs BatchNorm layers)."
            )
        if self.unit != "channels":
            self._check_reach()

    def _check_reach(self) -> None:
        """Raise ConfigError if no rounding lets the params/macs target be reached."""
        reach = {}
        for round_to in self.roundings:
            reach[round_to] = self._reach(round_to)
            if self.ratio <= reach[round_to] + self.tolerance:
                return
        best = max(reach, key=reach.__getitem__)
        how = f"pruning every layer by up to max_layer_ratio={self.max_layer_ratio}" + (
            f" with round_to={best}" if best else ""
        )
        if self.latency is not None:
            raise self._below_floor(self.latency, how, best)
        raise unreachable(self.unit, self.ratio, how, reach[best])

    def _below_floor(self, latency: LatencyTarget, how: str, round_to: int | None) -> ConfigError:
        """The refusal of a latency target below the measured floor: the latency of the largest
        cut, at the cap (measured again here, with the dense model, to name both in ms)."""
        magnitude = tp.importance.MagnitudeImportance()
        floor = self.prune_copy(self.max_layer_ratio, round_to, magnitude)[0]
        shape = tuple(self.example_inputs.shape[1:])
        dense_ms, floor_ms = latency.pair_ms(self.model, floor, shape)
        return below_floor(latency, self.ratio, dense_ms, floor_ms, how)

    def _grid(self, round_to: int | None) -> list[float]:
        """Channel ratios to scan when rounding makes the count non-monotone in the ratio."""
        if not round_to:
            return []
        points = SCAN_POINTS if self.latency is None else LATENCY_SCAN_POINTS
        return [self.max_layer_ratio * i / points for i in range(1, points + 1)]

    def _reach(self, round_to: int | None) -> float:
        """The largest params/macs reduction the channel ratios up to the cap can give.

        Magnitude importance gives the same layer widths as any criterion when allocation is
        uniform, so cheap cuts bound what the search can reach: one at the cap, or, with
        rounding, one at each point of the scan grid.
        """
        magnitude = tp.importance.MagnitudeImportance()
        return max(
            self._reduction(ratio, round_to, magnitude)[0]
            for ratio in self._grid(round_to) or [self.max_layer_ratio]
        )

    def _reduction(
        self, ratio: float, round_to: int | None, importance: Callable[..., Tensor] | None = None
    ) -> tuple[float, list[list[Any]] | None]:
        """The params/macs/latency reduction of the cut at channel `ratio` (rounded to
        `round_to`; `importance` defaults to the configured one) and its history, None where the
        reduction was remembered (`kdprune.pruning.memo`): only where the widths of a cut follow
        from the architecture (uniform allocation) and no calibration moves the random stream.
        A latency is remembered with its target, protocol and CPU in the key (`unit`): one run's
        checks and cut then agree on one measurement instead of three noisy ones, and a sweep's
        trials in one process share it; another CPU or target measures again."""
        limits = (self.max_layer_ratio, self.iterative_steps, self.ignored, self.layer_ratios)
        unit = self.unit if self.latency is None else ("latency", *self.latency.key())
        key = (
            None
            if self.global_pruning or (self.calibrate is not None and importance is None)
            else uniform_cut_key(self.model, self.example_inputs, unit,
                                 importance or self.importance, limits, ratio, round_to)
        )  # fmt: skip
        if key is not None and key in REDUCTIONS:
            return REDUCTIONS[key], None
        candidate, history = self.prune_copy(ratio, round_to, importance)
        if self.reduction_of is None:  # a channel target is cut, never searched
            raise ValueError("a channels unit has no reduction to search")
        achieved = self.reduction_of(self.model, candidate)
        if key is not None:
            REDUCTIONS.remember(key, achieved)
        return achieved, history

    def prune_copy(
        self,
        ratio: float,
        round_to: int | None,
        importance: Callable[..., Tensor] | None = None,
        by_layer: dict[str, float] | None = None,
    ) -> tuple[nn.Module, list[list[Any]]]:
        """Prune a copy of the model at channel `ratio`, widths rounded to a multiple of
        `round_to` (None: not rounded), by `importance` (default: the configured one,
        calibrated); return it and its history. `by_layer` (module path -> ratio) instead cuts
        each named layer by its own ratio in one step (the caller capped and rounded them)."""
        candidate = clone_model(self.model)
        layer_ratios = self.layer_ratios if by_layer is None else by_layer
        with autograd_enabled():
            pruner = tp.pruner.BasePruner(
                candidate,
                move_inputs(self.example_inputs, candidate),
                importance=importance or self.importance,
                global_pruning=self.global_pruning and by_layer is None,
                pruning_ratio=ratio,
                max_pruning_ratio=self.max_layer_ratio if by_layer is None else 0.999,
                iterative_steps=self.iterative_steps if by_layer is None else 1,
                ignored_layers=[candidate.get_submodule(path) for path in self.ignored],
                round_to=round_to,
                pruning_ratio_dict={
                    candidate.get_submodule(path): r for path, r in layer_ratios.items()
                },
            )
            for _ in range(pruner.iterative_steps):
                if self.calibrate is not None and importance is None:
                    self.calibrate(candidate, self.calibration, self.loss_fn)
                pruner.step()
        candidate.zero_grad(set_to_none=True)
        return candidate, plain_history(pruner.pruning_history())

    def _search(self, round_to: int | None) -> tuple[list[list[Any]], float]:
        """Find the channel ratio whose params/macs/latency reduction is within tolerance of the
        target, widths rounded to a multiple of `round_to` (None: not rounded); see
        `kdprune.pruning.structured_search`."""
        search = TargetSearch(functools.partial(self._reduction, round_to=round_to), self.ratio)
        cap, steps = self.max_layer_ratio, self.max_search_steps
        best = search_ratio(search, self._grid(round_to), cap, self.tolerance, steps)
        reduction, history = search.tried[best]
        if abs(reduction - self.ratio) > self.tolerance + 1e-9:  # float noise at the boundary
            raise ConfigError(
                f"pruning could not reach a {self.unit} reduction of {self.ratio:.1%} "
                f"(closest: {reduction:.1%} at channel ratio {best:.3f}, round_to={round_to})."
            )
        if history is None:  # a remembered reduction: cut these weights at the chosen ratio
            history = self.prune_copy(best, round_to)[1]
        return history, best
