"""`allocation: latency`: channels removed where they buy the most latency per unit of importance.

HALP's allocation (Shen et al., NeurIPS 2022), on kdprune's measured tables
(`kdprune.pruning.latency_table`): every dependency group picks one width from its grid, to keep
as much importance as possible (the configured Torch-Pruning criterion, which normalises each
group's scores to mean 1, as its global ranking does) while the table's savings add up to a
latency reduction. That is a multiple-choice knapsack, solved exactly as a small integer program
by SciPy's HiGHS (`scipy.optimize.milp`); no maintained pruning library ships one.

The table's savings are measured one group at a time and do not add up exactly (a convolution
between two cut groups shrinks on both sides), so the knapsack's budget is only the knob: the
cut it gives is measured as every `unit=latency` candidate is (interleaved with the dense model)
and the knob is bisected until the measured reduction meets the target within the tolerance
(`kdprune.pruning.structured_search.settle`). A measured cut is remembered by its widths
(`kdprune.pruning.memo`), so a run's check and its cut agree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch_pruning as tp
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import Tensor, nn

from kdprune.errors import ConfigError
from kdprune.pruning.latency_table import (
    ChannelGroup,
    LatencyTable,
    Savings,
    channel_groups,
    group_scores,
    removed_importance,
    width_grid,
)
from kdprune.pruning.memo import REDUCTIONS, shapes
from kdprune.pruning.search import TargetSearch
from kdprune.pruning.structured_search import settle

log = logging.getLogger(__name__)

Widths = dict[str, int]  # group root -> kept width


def allocate(
    grids: Mapping[ChannelGroup, Sequence[int]],
    savings: Savings,
    scores: Mapping[str, Tensor],
    need: float,
) -> Widths:
    """The widths (one per group, its own or one of its grid) that lose the least importance
    while the savings add up to at least `need`; the narrowest of every grid if none do."""
    options = [(g, w) for g in grids for w in (g.width, *grids[g])]
    cost = np.array([removed_importance(scores[g.root], w) if w < g.width else 0.0
                     for g, w in options])  # fmt: skip
    saved = np.array([0.0 if w == g.width else savings[g.root][w] for g, w in options])
    one_each = np.array([[float(g is h) for h, _ in options] for g in grids])
    result = milp(
        cost,
        integrality=np.ones(len(options)),
        bounds=Bounds(0, 1),
        constraints=[LinearConstraint(one_each, 1, 1), LinearConstraint(saved, need, np.inf)],
    )
    if result.x is None:  # infeasible: the table cannot save that much
        return {g.root: min((g.width, *grids[g])) for g in grids}
    return {g.root: w for (g, w), x in zip(options, result.x, strict=True) if x > 0.5}


class Knapsack:
    """The groups' grids, table savings and scores, with the greedy step `_complete` takes."""

    def __init__(
        self,
        grids: Mapping[ChannelGroup, Sequence[int]],
        savings: Savings,
        scores: Mapping[str, Tensor],
    ) -> None:
        self.grids, self.savings, self.scores = grids, savings, scores

    def saving(self, group: ChannelGroup, width: int) -> float:
        return 0.0 if width >= group.width else self.savings[group.root][width]

    def best_step(self, widths: Widths, done: set[str]) -> tuple[str, int] | None:
        """(group root, width): one grid step narrower for the group outside `done` whose
        table saving per unit of importance lost is largest; None where no step saves."""
        best: tuple[float, str, int] | None = None
        for group, grid in self.grids.items():
            now = widths[group.root]
            narrower = [w for w in grid if w < now]
            if group.root in done or not narrower:
                continue
            gain = self.saving(group, max(narrower)) - self.saving(group, now)
            scores = self.scores[group.root]
            lost = removed_importance(scores, max(narrower)) - removed_importance(scores, now)
            value = gain / max(lost, 1e-12)
            if gain > 0 and (best is None or value > best[0]):
                best = (value, group.root, max(narrower))
        return None if best is None else best[1:]


def latency_cut(
    pruner: Any,  # a StructuredPruner (which imports this module: no import of it here)
    round_to: int | None,
) -> tuple[list[list[Any]], dict[str, Any]]:
    """The `allocation: latency` cut of a `kdprune.pruning.StructuredPruner`'s model at its
    `unit=latency` target, widths on the `round_to` grid: its history and what it chose (the
    widths, the channel ratio, how many table entries the pruner has timed rather than read)."""
    reduction, table = pruner.reduction_of, pruner.latency_table
    if reduction is None or table is None:  # refused by check_structured_options
        raise ValueError("allocation latency needs unit latency")
    magnitude = tp.importance.MagnitudeImportance()

    def calibrate(model: nn.Module) -> None:
        if pruner.calibrate is not None:
            pruner.calibrate(model, pruner.calibration, pruner.loss_fn)

    scores = group_scores(
        pruner.model, pruner.example_inputs, pruner.ignored, pruner.importance, calibrate
    )
    allocation = LatencyAllocation(
        pruner.model,
        pruner.example_inputs,
        pruner.ignored,
        table,
        cut=lambda ratios: pruner.prune_copy(0.0, None, by_layer=ratios),
        probe=lambda ratios: pruner.prune_copy(0.0, None, magnitude, ratios)[0],
        reduction=reduction,
    )
    history, chosen = allocation.search(
        scores, pruner.ratio, round_to, pruner.max_layer_ratio, pruner.tolerance,
        pruner.max_search_steps,
    )  # fmt: skip
    return history, {**chosen, "table_measured": table.measured}


def predicted(grids: Mapping[ChannelGroup, Sequence[int]], savings: Savings) -> float:
    """The most the table says the groups can save together (each at its best width)."""
    return sum(max([0.0, *savings[g.root].values()]) for g in grids)


class LatencyAllocation:
    """The search of one latency-allocated cut of `model` (see the module docstring).

    `cut(ratios)` prunes a copy with the configured criterion (module path -> channel ratio),
    returning it and its history; `probe(ratios)` prunes one for timing, by magnitude and
    without calibration (which channels go does not change the latency, and a probe draws no
    random numbers, so the run's random stream does not depend on what was remembered);
    `reduction(dense, cut)` the measured latency reduction.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Tensor,
        ignored: Sequence[str],
        table: LatencyTable,
        *,
        cut: Callable[[dict[str, float]], tuple[nn.Module, list[list[Any]]]],
        probe: Callable[[dict[str, float]], nn.Module],
        reduction: Callable[[nn.Module, nn.Module], float],
    ) -> None:
        self.model, self.example_inputs, self.ignored = model, example_inputs, tuple(ignored)
        self.table, self.cut, self.probe, self.reduction = table, cut, probe, reduction

    def search(
        self,
        scores: Mapping[str, Tensor],
        target: float,
        round_to: int | None,
        max_layer_ratio: float,
        tolerance: float,
        steps: int,
    ) -> tuple[list[list[Any]], dict[str, Any]]:
        """The history of the cut whose measured reduction is within `tolerance` of `target`
        (ConfigError if none is), widths on the `round_to` grid, and what it chose. `scores`:
        the criterion's per-channel scores by group root; a group it does not score keeps its
        width."""
        groups = [g for g, _ in channel_groups(self.model, self.example_inputs, self.ignored)]
        grids = {
            g: width_grid(g.width, max_layer_ratio, round_to) if g.root in scores else ()
            for g in groups
        }
        shape = tuple(self.example_inputs.shape[1:])
        savings = self.table.savings(self.model, shape, grids, self.probe)
        knapsack = Knapsack(grids, savings, scores)

        def measured(knob: float) -> tuple[float, Widths]:
            return self._measure(groups, allocate(grids, savings, scores, knob))

        search = TargetSearch(measured, target)
        most = predicted(grids, savings)
        best = settle(search, 0.0, most, min(target, most), tolerance, steps)
        reduction, widths = search.tried[best]
        if abs(reduction - target) > tolerance:
            reduction, widths = self._complete(groups, knapsack, search, tolerance, steps)
        if abs(reduction - target) > tolerance + 1e-9:
            raise ConfigError(
                f"latency allocation could not reach a latency reduction of {target:.1%} "
                f"(closest: {reduction:.1%}, round_to={round_to})."
            )
        _, history = self.cut(self._ratios(groups, widths))
        removed = sum(g.width - widths[g.root] for g in groups) / sum(g.width for g in groups)
        chosen = {"widths": widths, "channel_ratio": removed, "table_reduction": best,
                  "measured_reduction": reduction}  # fmt: skip
        return history, chosen

    def _complete(
        self,
        groups: Sequence[ChannelGroup],
        knapsack: Knapsack,
        search: TargetSearch[Widths],
        tolerance: float,
        steps: int,
    ) -> tuple[float, Widths]:
        """Where no knapsack budget lands within `tolerance` (latency moves in steps: a kernel
        changes at some width), go on from the closest cut short of the target one grid step
        at a time, the step that buys the most latency per unit of importance first, each
        measured; a step that overshoots is undone and its group left alone. The closest cut
        tried (of the search's and these) is the answer."""
        short = [cut for cut in search.tried.values() if cut[0] < search.target]
        tried = list(search.tried.values())
        reduction, widths = max(short, key=lambda cut: cut[0], default=tried[0])
        done: set[str] = set()
        for _ in range(steps):
            step = knapsack.best_step(widths, done)
            if step is None or abs(reduction - search.target) <= tolerance:
                break
            trial = {**widths, step[0]: step[1]}
            measured = self._measure(groups, trial)[0]
            tried.append((measured, trial))
            if measured > search.target + tolerance:
                done.add(step[0])
            else:
                reduction, widths = measured, trial
        return min(tried, key=lambda cut: abs(cut[0] - search.target))

    def _measure(self, groups: Sequence[ChannelGroup], widths: Widths) -> tuple[float, Widths]:
        """The measured reduction of the cut at `widths` (remembered by them) and the widths."""
        key = (
            "latency-allocation",
            repr(self.model),
            shapes(self.example_inputs),
            self.table.target.key(),
            tuple(sorted(widths.items())),
        )
        if key not in REDUCTIONS:
            candidate = self.probe(self._ratios(groups, widths))
            REDUCTIONS.remember(key, self.reduction(self.model, candidate))
            log.info("latency allocation: widths %s measure %.1f%% faster", widths,
                     100 * REDUCTIONS[key])  # fmt: skip
        return REDUCTIONS[key], widths

    @staticmethod
    def _ratios(groups: Sequence[ChannelGroup], widths: Widths) -> dict[str, float]:
        """Per-layer channel ratios that cut every group to its width."""
        return {
            path: ratio
            for g in groups
            if widths[g.root] < g.width
            for path, ratio in g.ratios(widths[g.root]).items()
        }
