"""The channel-ratio search of a structured cut toward a params / MACs / latency target.

Without rounding the reduction grows with the ratio and is bisected. With `round_to` a layer
whose kept width rounds down to zero is left whole (Torch-Pruning's rule), so the reduction can
fall as the ratio grows: a grid is scanned first and bisection refines the grid interval that
brackets the target. Among ratios that hit the aim (half the tolerance) the smallest wins: with
rounding, larger ratios leave thin layers whole and cut the others harder, an uneven and slower
network. A measured latency is noisy, so it is never exactly monotone either; the same bracket
and the same tolerance serve it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from kdprune.pruning.search import TargetSearch


def search_ratio(
    search: TargetSearch[Any],
    grid: Sequence[float],
    max_layer_ratio: float,
    tolerance: float,
    steps: int,
) -> float:
    """The channel ratio `search` settles on: scan `grid` (empty: no scan), then bisect for at
    most `steps` cuts; the least compressing ratio within half the `tolerance`, else the
    closest (the caller decides whether that is close enough)."""
    low, high = 0.0, max_layer_ratio
    # Params and MACs fall roughly with the square of the kept width: a good first guess.
    ratio = min(max(1.0 - math.sqrt(1.0 - search.target), low), high)
    if grid:
        bracket = search.scan(grid)
        low, high = bracket or (low, high)
        ratio = (low + high) / 2 if bracket else high
    return settle(search, low, high, ratio, tolerance, steps)


def settle(
    search: TargetSearch[Any], low: float, high: float, first: float, tolerance: float, steps: int
) -> float:
    """Bisect [low, high] from `first` for at most `steps` cuts, until a setting is within half
    the `tolerance` of the target (or within it, once the bracket is narrow: on small layers the
    count moves in steps and may never land closer); the least compressing such setting, else
    the closest."""
    aim = tolerance / 2

    def done(low: float, high: float) -> bool:
        best = search.choice(aim)
        return best is not None and (
            search.error(best) <= aim or (search.error(best) <= tolerance and high - low < 0.05)
        )

    search.bisect(low, high, first, steps, done)
    best = search.choice(aim)
    if best is None:  # bisect always tries its first setting
        raise ValueError("the search tried no setting")
    return best
