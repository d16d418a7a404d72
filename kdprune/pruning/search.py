"""One search toward a target reduction, shared by every pruner that turns one knob.

A pruner hands `TargetSearch` its own "cut at this setting" function: setting -> (reduction,
cut), where the reduction is 1 - measure(cut) / measure(dense) for the pruner's Measure
(`kdprune.models.counting`: params or MACs today; a measured unit plugs in the same way). The
search remembers every setting it tried, scans a grid for a bracket where the reduction is not
monotone, bisects, and picks a setting; the pruner decides when it is close enough and what to
say when the target is out of reach (`unreachable`).

Structured pruning turns the channel ratio (the reduction grows with it); low-rank
decomposition turns its rank rule's knob (the reduction falls as it grows: `increasing=False`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import pairwise
from typing import Any, Generic, TypeVar

from kdprune.errors import ConfigError

Cut = TypeVar("Cut")
Done = Callable[[float, float], bool]  # (low, high) of the bracket -> stop bisecting


class TargetSearch(Generic[Cut]):
    """The settings of one knob tried toward `target`, each with its reduction and its cut.

    `reduction_at(setting)` makes the cut at a setting (on a copy of the model, or from cost
    tables) and returns (reduction, cut). `increasing` says the reduction grows with the
    setting; "less compressing" below means the setting on the side of a smaller reduction.
    """

    def __init__(
        self,
        reduction_at: Callable[[float], tuple[float, Cut]],
        target: float,
        increasing: bool = True,
    ) -> None:
        self.reduction_at, self.target, self.increasing = reduction_at, float(target), increasing
        self.tried: dict[float, tuple[float, Cut]] = {}

    def evaluate(self, setting: float) -> float:
        """The reduction of the cut at `setting` (kept in `tried`)."""
        self.tried[setting] = self.reduction_at(setting)
        return self.tried[setting][0]

    def error(self, setting: float) -> float:
        """How far the tried `setting`'s reduction is from the target."""
        return abs(self.tried[setting][0] - self.target)

    def scan(self, grid: Iterable[float]) -> tuple[float, float] | None:
        """Try every setting of `grid` (increasing settings, reduction 0 below the first) and
        return the first interval whose ends bracket the target, or None."""
        points = [(0.0, 0.0)] + [(setting, self.evaluate(setting)) for setting in grid]
        brackets = [(s0, s1) for (s0, r0), (s1, r1) in pairwise(points) if r0 < self.target <= r1]
        return brackets[0] if brackets else None

    def bisect(
        self, low: float, high: float, first: float, steps: int, done: Done | None = None
    ) -> tuple[float, float]:
        """Bisect [low, high] from `first` for at most `steps` cuts, stopping early when
        `done(low, high)` or a setting repeats; return the final bracket."""
        setting = first
        for _ in range(steps):
            if (done is not None and done(low, high)) or setting in self.tried:
                break
            short = self.evaluate(setting) < self.target  # the cut removes too little
            low, high = (setting, high) if short == self.increasing else (low, setting)
            setting = (low + high) / 2
        return low, high

    def choice(self, within: float) -> float | None:
        """Among the settings within `within` of the target, the least compressing; if none, the
        closest (the first tried on a tie); None before any setting was tried."""
        hits = [s for s in self.tried if self.error(s) <= within]
        if hits:
            return min(hits) if self.increasing else max(hits)
        return min(self.tried, key=self.error) if self.tried else None

    def closest(self) -> float:
        """The closest setting to the target; among equally close ones, the least compressing."""
        best = self.choice(min(self.error(s) for s in self.tried))
        assert best is not None  # min() above found a tried setting
        return best


def unreachable(unit: str, target: float, how: str, reach: float, end: str = ".") -> ConfigError:
    """The error for a target beyond what the largest cut the pruner allows (`how`) removes."""
    return ConfigError(
        f"a {unit} reduction of {target:.1%} cannot be reached: {how} removes at most "
        f"{reach:.1%}{end}"
    )


def below_floor(
    target: Any, ratio: float, dense_ms: float, floor_ms: float, how: str
) -> ConfigError:
    """The error for a latency target (`target`: a `kdprune.metrics.LatencyTarget`) below the
    measured floor: the latency `floor_ms` of the largest cut (`how`), which cutting channels
    does not lower (the fixed cost of a call: `make bench` (d))."""
    return ConfigError(
        f"a latency reduction of {ratio:.1%} ({1 / (1 - ratio):.2f}x faster) on "
        f"{target.describe()} cannot be reached: the measured floor is {floor_ms:.3g} ms of the "
        f"dense model's {dense_ms:.3g} ms ({dense_ms / floor_ms:.2f}x at most, "
        f"{how}); cutting channels does not remove that fixed cost."
    )
