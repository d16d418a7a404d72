"""Per-group ratios from a sensitivity table, for a budget: prune where it costs least.

Each group's curve becomes an accuracy drop that only grows with the ratio (the running maximum
of the validation accuracy lost against ratio 0, never below zero), and the table says what
pruning the group alone saves (MACs, or params). For a price p, every group takes the ratio that
minimises drop − p · saved (on a fine grid, linear between the table's points): a group whose
channels cost little accuracy per MAC goes first, whatever its drop. p is bisected until the
combined cut — measured, not summed, since coupled layers save less together — keeps the budget.
Channels are whole, so the count can jump over the budget between two prices; then each group's
ratio is moved on its own (`_adjust`). Of the cuts that meet the budget, the one whose summed
predicted drop is smallest is chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kdprune.errors import ConfigError
from kdprune.run_record import VAL_ACC
from kdprune.sensitivity.groups import PrunableGroup

DIGITS = 4  # ratios are rounded before they are measured, so the file holds what was measured
STEP = 0.01  # the fine grid each group's ratio is chosen on
PRICES = (1e-4, 1e4)  # accuracy per fraction of the dense count saved: the bisection's bracket


@dataclass(frozen=True)
class Allocation:
    """Per-group ratios, per-layer ratios (every output layer of a group at its ratio), the
    count they keep, the budget, and the drop the sensitivity curves predict for them."""

    group_ratios: dict[str, float]
    layer_ratios: dict[str, float]
    count: float
    budget: float
    predicted_drop: float

    @property
    def gap(self) -> float:
        """Relative difference between the count kept and the budget."""
        return abs(self.count - self.budget) / self.budget


@dataclass(frozen=True)
class Curve:
    """One group on the fine grid: ratios, the accuracy drop and the count saved at each."""

    ratios: np.ndarray
    drops: np.ndarray
    saved: np.ndarray

    def drop(self, ratio: float) -> float:
        """The predicted drop at `ratio`."""
        return float(np.interp(ratio, self.ratios, self.drops))


def curve(table: pd.DataFrame, group: str, counted: str) -> Curve:
    """A group's drop (rising with the ratio, 0 at 0) and saving (a fraction of the model's
    count at ratio 0), from its rows of sensitivity.csv, on the fine grid."""
    rows = table[table["group"] == group].sort_values("ratio")
    ratios = rows["ratio"].to_numpy(float)
    base = rows[rows["ratio"] == 0].iloc[0]
    drops = np.maximum.accumulate(np.maximum(base[VAL_ACC] - rows[VAL_ACC].to_numpy(float), 0))
    saved = (base[counted] - rows[counted].to_numpy(float)) / base[counted]
    fine = np.round(np.arange(0.0, ratios[-1] + STEP / 2, STEP), DIGITS)
    return Curve(fine, np.interp(fine, ratios, drops), np.interp(fine, ratios, saved))


class _Search:
    """The cuts tried so far, each pruned and counted once."""

    def __init__(self, groups, curves: dict[str, Curve], measure, budget: float) -> None:
        self.groups, self.curves, self.measure, self.budget = groups, curves, measure, budget
        self.counts: dict[tuple, float] = {}
        self.tried: list[Allocation] = []

    def cut(self, group_ratios: dict[str, float]) -> Allocation:
        ratios = {name: round(float(r), DIGITS) for name, r in group_ratios.items()}
        layers = {layer: ratios[g.name] for g in self.groups for layer in g.out_layers}
        key = tuple(sorted(layers.items()))
        if key not in self.counts:
            self.counts[key] = float(self.measure(layers))
        drop = sum(self.curves[name].drop(r) for name, r in ratios.items())
        tried = Allocation(ratios, layers, self.counts[key], self.budget, drop)
        self.tried.append(tried)
        return tried

    def at(self, price: float) -> Allocation:
        """Every group at the ratio minimising its drop − price · saved."""
        return self.cut(
            {n: c.ratios[np.argmin(c.drops - price * c.saved)] for n, c in self.curves.items()}
        )

    def choice(self, aim: float, tolerance: float) -> Allocation | None:
        """Of the cuts within `aim` of the budget (else `tolerance`), the least predicted drop."""
        for limit in (aim, tolerance):
            close = [a for a in self.tried if a.gap <= limit]
            if close:
                return min(close, key=lambda a: (a.predicted_drop, a.gap))
        return None


def _bisect_price(search: _Search, aim: float, steps: int) -> list[Allocation]:
    """Bisect the price (geometrically); return the closest cuts on either side of the budget,
    where `_adjust` starts."""
    low, high = PRICES
    above, below = search.at(low), search.at(high)
    for _ in range(steps):
        middle = float(np.sqrt(low * high))
        tried = search.at(middle)
        if tried.gap <= aim:
            return [tried]
        if tried.count > search.budget:
            low, above = middle, tried
        else:
            high, below = middle, tried
    return [above, below]


def _adjust(search: _Search, start: Allocation, aim: float, steps: int) -> None:
    """Channels are whole: one more or less can jump over the budget. Move one group's ratio at
    a time from `start` (further if it keeps too much, back if too little), bisected, and leave
    every cut it tries as a candidate."""
    ratios = dict(start.group_ratios)
    more = start.count > search.budget
    for group in search.groups:
        cap = float(search.curves[group.name].ratios[-1])
        low, high = (ratios[group.name], cap) if more else (0.0, ratios[group.name])
        for _ in range(steps):
            middle = round((low + high) / 2, DIGITS)
            if middle in (low, high):
                break
            tried = search.cut({**ratios, group.name: middle})
            if tried.gap <= aim:
                break
            low, high = (middle, high) if tried.count > search.budget else (low, middle)


def allocate(
    table: pd.DataFrame,
    groups: Sequence[PrunableGroup],
    measure: Callable[[dict[str, float]], float],
    budget: float,
    counted: str = "macs",
    tolerance: float = 0.02,
    steps: int = 30,
) -> Allocation:
    """Ratios whose combined cut keeps `budget` (what `measure(layer_ratios)` counts, the
    table's `counted` column) within `tolerance` (relative), at the least predicted drop;
    ConfigError if no cut tried comes that close."""
    curves = {g.name: curve(table, g.name, counted) for g in groups}
    search = _Search(groups, curves, measure, float(budget))
    deepest = search.cut({name: c.ratios[-1] for name, c in curves.items()})
    if deepest.count > budget * (1 + tolerance):
        raise ConfigError(
            f"the sensitivity grid cannot reach the budget: every group at its largest ratio "
            f"keeps {deepest.count:.4g}, the budget is {budget:.4g}; add larger ratios."
        )
    aim = tolerance / 2  # a margin for the run that rebuilds the cut
    for start in _bisect_price(search, aim, steps):
        if start.gap > aim:
            _adjust(search, start, aim, steps)
    chosen = search.choice(aim, tolerance)
    if chosen is None:
        closest = min(search.tried, key=lambda a: a.gap)
        raise ConfigError(
            f"no sensitivity-guided cut keeps the budget within {tolerance:.0%}: the closest "
            f"keeps {closest.count:.4g} against {budget:.4g}."
        )
    return chosen


def predicted_drop(
    table: pd.DataFrame, groups: Sequence[PrunableGroup], group_ratios: dict[str, float]
) -> float:
    """The summed drop the curves predict for a cut (group name -> channel ratio)."""
    return sum(curve(table, g.name, "macs").drop(group_ratios[g.name]) for g in groups)
