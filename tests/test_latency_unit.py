"""`prune_method.unit=latency`: the structured cut searched toward a measured latency.

No test here reads a clock that runs: the searches use a latency that is a function of the
widths (a fixed cost plus a cost per MAC, the model `make bench` (d) fits), and the measuring
protocol is checked with a clock that returns chosen times.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest
import torch
import torch_pruning as tp
from torch import nn

from kdprune.errors import ConfigError
from kdprune.metrics.latency_target import (
    LatencyTarget,
    check_latency_options,
    interleaved_ms,
    latency_record,
)
from kdprune.models import lenet5
from kdprune.models.counting import count
from kdprune.pruning import memo
from kdprune.pruning.masks import clone_model
from kdprune.pruning.structured import StructuredPruner

X = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
AVX512 = {"avx512f", "avx2"}


@dataclass(frozen=True)
class WidthLatency(LatencyTarget):
    """A latency of the widths alone: `fixed_ms` plus `ms_per_mmac` per million MACs per
    sample, times the batch; each pair it is asked for is logged (no clock)."""

    fixed_ms: float = 6.0
    ms_per_mmac: float = 1.0
    asked: list[int] = field(default_factory=list, repr=False, compare=False)

    def ms(self, model: nn.Module) -> float:
        macs = count(model, X, "macs")
        return self.fixed_ms + self.ms_per_mmac * self.batch_size * macs / 1e6

    def pair_ms(self, dense, cut, input_shape, clock=None) -> tuple[float, float]:
        self.asked.append(count(cut, X, "macs"))
        return self.ms(dense), self.ms(cut)


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test searches from an empty memo of reductions."""
    monkeypatch.setattr(memo, "REDUCTIONS", memo.Reductions())
    monkeypatch.setattr("kdprune.pruning.structured.REDUCTIONS", memo.REDUCTIONS)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return lenet5(num_classes=10, in_channels=1, image_size=28, widths=[16, 32], hidden=[120, 84])


def _pruner(model: nn.Module, target: LatencyTarget, ratio: float, **options) -> StructuredPruner:
    options = {"round_to": None, "importance": tp.importance.MagnitudeImportance()} | options
    return StructuredPruner(model, X, ratio=ratio, unit="latency", latency=target, **options)


@pytest.mark.parametrize("round_to", [None, "auto"])
def test_the_cut_reaches_a_latency_target_with_a_fixed_cost(round_to) -> None:
    target = WidthLatency(batch_size=4)
    dense = _model()
    pruned = clone_model(dense)
    pruner = _pruner(pruned, target, 0.4, round_to=round_to, cpu_flags=AVX512)
    pruner.apply()
    achieved = 1 - target.ms(pruned) / target.ms(dense)
    assert achieved == pytest.approx(0.4, abs=pruner.tolerance)
    # The fixed cost stays: the cut removes more of the MACs than of the latency.
    assert 1 - count(pruned, X, "macs") / count(dense, X, "macs") > achieved + 0.05
    assert round_to is None or pruner.round_to in (16, 8, None)


def test_a_target_below_the_floor_is_refused_naming_the_floor() -> None:
    target = WidthLatency(batch_size=4)
    dense = _model()
    floor_model = clone_model(dense)
    StructuredPruner(floor_model, X, importance=tp.importance.MagnitudeImportance(), ratio=0.9,
                     round_to=None).apply()  # fmt: skip
    dense_ms, floor_ms = target.ms(dense), target.ms(floor_model)
    assert 1 - floor_ms / dense_ms < 0.75  # the target below is beyond the floor
    with pytest.raises(ConfigError) as err:
        _pruner(dense, target, 0.75)
    message = str(err.value)
    assert "\n" not in message and "measured floor" in message
    assert f"{floor_ms:.3g} ms" in message and f"{dense_ms:.3g} ms" in message
    assert target.describe() in message and "max_layer_ratio=0.9" in message


def test_a_remembered_latency_is_keyed_by_its_target() -> None:
    target = WidthLatency(batch_size=4)
    first = _pruner(_model(0), target, 0.4)
    first.plan()
    measured = len(target.asked)
    second = _pruner(_model(1), target, 0.4)  # other weights, same architecture and target
    assert second.plan() == first.plan() and len(target.asked) == measured >= 2
    other = WidthLatency(batch_size=4, threads=2)  # another target measures again
    _pruner(_model(1), other, 0.4).plan()
    assert len(other.asked) == measured


def test_the_latency_options_are_checked() -> None:
    check_latency_options({"runtime": "eager", "batch_size": 1, "warmup": 0})
    bad = [
        ({"runtime": "tensorrt"}, "runtime must be one of eager, onnxruntime"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"threads": 1.5}, "threads must be an int >= 1"),
        ({"warmup": -1}, "warmup must be an int >= 0"),
        ({"batchsize": 64}, "no option 'batchsize'"),
    ]
    for options, message in bad:
        with pytest.raises(ConfigError, match=message):
            check_latency_options(options)
    with pytest.raises(ConfigError, match="runtime"):
        StructuredPruner.check_options(ratio=0.5, unit="latency", latency={"runtime": "gpu"})


def _clock(durations: Sequence[float]) -> Iterator[float]:
    """A clock whose consecutive (start, stop) reads are `durations` seconds apart."""
    now = 0.0
    for d in durations:
        yield now
        now += d
        yield now
        now += 100.0  # between samples: never counted


def test_the_protocol_warms_up_then_interleaves_and_takes_medians() -> None:
    order: list[str] = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    clock = _clock([0.001, 0.010, 0.003, 0.030, 0.002, 0.020])
    ms = interleaved_ms(calls, repeats=3, warmup=2, clock=lambda: next(clock))
    assert order == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert ms == pytest.approx({"a": 2.0, "b": 20.0})


@pytest.mark.parametrize("runtime", ["eager", "onnxruntime"])
def test_a_target_times_both_models_on_its_runtime(runtime: str) -> None:
    dense = _model()
    cut = clone_model(dense)
    StructuredPruner(cut, X, importance=tp.importance.MagnitudeImportance(), ratio=0.5,
                     round_to=None).apply()  # fmt: skip
    clock = _clock([0.004, 0.002] * 3)
    threads = torch.get_num_threads()
    target = LatencyTarget(runtime=runtime, batch_size=2, threads=2, repeats=3, warmup=1)
    before, after = target.pair_ms(dense, cut, (1, 28, 28), clock=lambda: next(clock))
    assert (before, after) == pytest.approx((4.0, 2.0))
    assert torch.get_num_threads() == threads


def test_the_ledger_records_the_target_and_the_measured_speedup() -> None:
    target = WidthLatency(batch_size=4)
    dense = _model()
    cut = clone_model(dense)
    _pruner(cut, target, 0.4).apply()
    row = latency_record(target, 0.4, dense, cut, (1, 28, 28))
    assert row["latency_runtime"] == "onnxruntime" and row["latency_batch_size"] == 4
    assert row["latency_target_speedup"] == pytest.approx(1 / 0.6)
    assert row["latency_speedup"] == pytest.approx(target.ms(dense) / target.ms(cut))
    assert row["latency_ms_before"] == pytest.approx(target.ms(dense))
    assert {"cpu_model", "cpu_isa"} <= set(row)


def test_a_latency_run_records_its_target_and_both_speedups(make_cfg, tmp_path, monkeypatch):
    """A whole run with unit=latency, its latency a function of the widths (a fixed cost of a
    tenth of the dense model's plus its MACs): metrics.json names the target, the CPU and both
    speed-ups, and the measured one meets the target."""

    def widths_ms(self, dense, cut, input_shape, clock=None) -> tuple[float, float]:
        x = torch.zeros(1, *input_shape)
        fixed = 0.1 * count(dense, x, "macs")
        return fixed + count(dense, x, "macs"), fixed + count(cut, x, "macs")

    monkeypatch.setattr(LatencyTarget, "pair_ms", widths_ms)
    from kdprune.app import run

    overrides = ["budget.student_epochs=2", "budget.finetune_epochs=1", "teacher.epochs=2",
                 "trainer.max_batches=3", "model=lenet5_wide", "prune_method.unit=latency",
                 "prune_method.ratio=0.5", "prune_method.latency.batch_size=4"]  # fmt: skip
    metrics = run(make_cfg(*overrides), tmp_path / "run")
    assert metrics["unit"] == "latency" and metrics["latency_runtime"] == "onnxruntime"
    assert metrics["latency_batch_size"] == 4 and metrics["latency_threads"] == 1
    assert metrics["latency_target_speedup"] == pytest.approx(2.0)
    assert 1 - 1 / metrics["latency_speedup"] == pytest.approx(0.5, abs=0.02)
    assert metrics["latency_speedup"] == metrics["latency_ms_before"] / metrics["latency_ms_after"]
    assert metrics["macs_speedup"] > metrics["latency_speedup"]  # the fixed cost stays
    assert metrics["cpu_model"] and metrics["cpu_isa"]
