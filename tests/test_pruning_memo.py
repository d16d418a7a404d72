"""The remembered reductions of uniform cuts (`kdprune.pruning.memo`): a search that reuses them
finds the same cut on other weights of the same architecture, with fewer Torch-Pruning passes;
cuts whose widths may depend on the weights or the random stream are never remembered."""

from typing import Any

import pytest
import torch
import torch_pruning as tp

from kdprune.models import lenet5
from kdprune.pruning import memo
from kdprune.pruning.structured import StructuredPruner

X = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
AVX512 = {"avx512f", "avx2"}  # `auto` tries 16, then 8, then no rounding: the headline's search


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return lenet5(num_classes=10, in_channels=1, image_size=28, widths=[16, 32], hidden=[120, 84])


def _pruner(model: torch.nn.Module, **options: Any) -> StructuredPruner:
    options = {"importance": tp.importance.MagnitudeImportance(), "ratio": 0.5} | options
    return StructuredPruner(model, X, unit="macs", round_to="auto", cpu_flags=AVX512, **options)


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The channel ratios of every Torch-Pruning pass over a copy, from an empty memo."""
    monkeypatch.setattr(memo, "REDUCTIONS", memo.Reductions())
    monkeypatch.setattr("kdprune.pruning.structured.REDUCTIONS", memo.REDUCTIONS)
    seen: list[float] = []
    copy = StructuredPruner.prune_copy

    def counted(self, ratio, *args, **kwargs):
        seen.append(ratio)
        return copy(self, ratio, *args, **kwargs)

    monkeypatch.setattr(StructuredPruner, "prune_copy", counted)
    return seen


def _cut(pruner: StructuredPruner) -> tuple[Any, float]:
    history, ratio = pruner._one_shot()
    return history, ratio


def test_remembered_search_finds_the_same_cut_with_one_pass(passes: list[float]) -> None:
    trained = _model(1)
    fresh_history, fresh_ratio = _cut(_pruner(_model(0)))  # as the check does, other weights
    first = len(passes)
    history, ratio = _cut(_pruner(trained))
    remembered = len(passes) - first
    memo.REDUCTIONS.clear()
    assert (history, ratio) == _cut(_pruner(trained))  # what a search from nothing finds
    assert ratio == fresh_ratio and history != fresh_history  # same widths, other channels
    assert first > 10 and remembered == 1  # the search's passes, then the chosen cut only


def test_uniform_widths_do_not_depend_on_the_weights(passes: list[float]) -> None:
    """What the memo rests on: a uniform cut of two networks of one architecture keeps the same
    widths, whatever their weights."""
    a, b = _model(0), _model(1)
    assert _pruner(a).plan() == _pruner(b).plan()


@pytest.mark.parametrize(
    "options",
    [
        {"allocation": "global"},
        {"importance": tp.importance.RandomImportance()},
    ],
    ids=["global-allocation", "random-importance"],
)
def test_weight_or_rng_dependent_cuts_are_searched_every_time(
    passes: list[float], options: dict[str, Any]
) -> None:
    model = _model(0)
    _cut(_pruner(model, **options))
    first = len(passes)
    _cut(_pruner(model, **options))
    assert len(passes) - first >= first // 2 > 0  # searched again, not remembered
    assert not any(key[3] == "RandomImportance" for key in memo.REDUCTIONS)


def test_a_pruned_architecture_is_another_key(passes: list[float]) -> None:
    model = _model(0)
    _pruner(model).apply()
    narrower = len(passes)
    _cut(_pruner(model, ratio=0.3))
    assert len(passes) - narrower > 1  # the cut network's cuts were never seen


def test_the_memo_is_bounded() -> None:
    reductions = memo.Reductions()
    for i in range(memo.LIMIT + 1):
        reductions.remember((i,), 0.5)
    assert len(reductions) == 1
