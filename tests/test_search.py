"""The shared target search and the one counter: settings tried, brackets, choices, counts."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import prune

from kdprune.models import lenet5
from kdprune.models.counting import count, count_macs_params, measure
from kdprune.pruning.search import TargetSearch

EXAMPLE = torch.zeros(1, 1, 8, 8)


def test_bisection_reaches_an_increasing_target_and_stops_when_done() -> None:
    search = TargetSearch(lambda x: (x * x, f"cut at {x}"), target=0.25)
    low, high = search.bisect(0.0, 1.0, 0.9, steps=30, done=lambda lo, hi: hi - lo < 1e-3)
    assert low <= 0.5 <= high and high - low < 1e-3
    best = search.choice(1e-3)
    assert search.error(best) <= 1e-3 and search.tried[best][1] == f"cut at {best}"


def test_a_falling_reduction_moves_the_other_way_and_ties_keep_the_larger_knob() -> None:
    # Steps of 0.25: every knob in [0.5, 0.75) removes exactly the target.
    search = TargetSearch(lambda t: (1.0 - int(t * 4) / 4, t), target=0.5, increasing=False)
    search.evaluate(1.0)
    search.evaluate(0.0)
    search.bisect(0.0, 1.0, 0.5, steps=10)
    hits = [t for t in search.tried if search.error(t) == 0]
    assert len(hits) > 1 and search.closest() == max(hits)


def test_scan_finds_the_first_bracket_of_a_reduction_that_is_not_monotone() -> None:
    values = {0.25: 0.25, 0.5: 0.75, 0.75: 0.25, 1.0: 1.0}
    search = TargetSearch(lambda x: (values[x], None), target=0.5)
    assert search.scan(sorted(values)) == (0.25, 0.5)
    assert search.choice(0.0) == 0.25  # none within 0: the closest, the first tried on a tie
    assert search.choice(0.25) == 0.25  # within: the least compressing
    assert TargetSearch(lambda x: (0.0, None), 0.5).scan([0.5, 1.0]) is None


def test_one_counter_for_params_and_macs_masks_or_not() -> None:
    model = lenet5(10, 1, 8)
    macs, params = count_macs_params(model, EXAMPLE)
    assert count(model, EXAMPLE, "params") == params == sum(p.numel() for p in model.parameters())
    assert count(model, EXAMPLE, "macs") == macs > 0
    prune.l1_unstructured(model.fc1, "weight", amount=0.5)  # masked weights are still stored
    assert measure("macs", EXAMPLE)(model) == macs
    assert measure("params", EXAMPLE)(model) == params
    with pytest.raises(ValueError, match="channels"):
        measure("channels", EXAMPLE)
