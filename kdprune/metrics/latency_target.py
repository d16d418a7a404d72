"""A named latency target: the runtime, batch and threads a model's latency is measured on, and
the ledger's protocol for it (warm-up, then the two models interleaved, median per model).

`prune_method.unit=latency` cuts until the latency on this target falls by `ratio`; the ledger
records the before / after latency on it (`latency_record`). A measurement compares two models
in one interleaved run (dense, cut, dense, cut, ...), so a neighbour's load on a shared CPU
falls on both alike, as in `kdprune.quantization.onnx_measure.ort_latency_ms` and `make bench`.

Runtimes: `eager` (PyTorch under inference_mode), `onnxruntime` (the model exported with
`kdprune.export.export_module`, ONNX Runtime's CPU provider, graph optimisations on) and
`onnxruntime_int8` (that file quantized by `kdprune.quantization.onnx_ptq.quantize_onnx`, the
static INT8 of `quantize=ptq`, calibrated on seeded random images: the INT8 graph, hence its
latency, does not depend on the calibration ranges). Measuring never draws from torch's global
random stream: the run's training after a cut is the same whatever was timed.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdprune.cpu_features import cpu_info
from kdprune.errors import ConfigError
from kdprune.models.counting import Reduction
from kdprune.pruning.masks import clone_model, make_permanent

RUNTIMES = ("eager", "onnxruntime", "onnxruntime_int8")
Clock = Callable[[], float]


def _positive_int(options: Mapping[str, Any], key: str, least: int = 1) -> None:
    value = options.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"prune_method.latency.{key} must be an int >= {least}, got {value!r}.")


def check_latency_options(options: Any) -> None:
    """Raise ConfigError (one line) unless `options` is a valid `prune_method.latency` node
    (or a LatencyTarget: its own fields are checked)."""
    if isinstance(options, LatencyTarget):
        options = {name: getattr(options, name) for name in LatencyTarget.__dataclass_fields__}
    if not isinstance(options, Mapping):
        raise ConfigError(
            f"prune_method.latency must be a mapping (runtime, batch_size, ...), got {options!r}."
        )
    unknown = sorted(set(options) - set(LatencyTarget.__dataclass_fields__))
    if unknown:
        raise ConfigError(
            f"prune_method.latency has no option {unknown[0]!r}; it takes "
            f"{', '.join(LatencyTarget.__dataclass_fields__)}."
        )
    merged = {**asdict(LatencyTarget()), **options}
    if merged["runtime"] not in RUNTIMES:
        raise ConfigError(
            f"prune_method.latency.runtime must be one of {', '.join(RUNTIMES)}; got "
            f"{merged['runtime']!r}."
        )
    for key in ("batch_size", "threads", "repeats"):
        _positive_int(merged, key)
    _positive_int(merged, "warmup", least=0)


def interleaved_ms(
    calls: Mapping[str, Callable[[], Any]], repeats: int, warmup: int, clock: Clock
) -> dict[str, float]:
    """Median milliseconds per call of each of `calls`, timed in turn (A, B, A, B, ...)
    `repeats` times after `warmup` untimed calls of each."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = clock()
            call()
            times[name].append(clock() - start)
    return {name: 1000.0 * statistics.median(t) for name, t in times.items()}


@dataclass(frozen=True)
class LatencyTarget:
    """Where and how a latency is measured (`prune_method.latency`)."""

    runtime: str = "onnxruntime"
    batch_size: int = 64
    threads: int = 1
    repeats: int = 10
    warmup: int = 2

    @classmethod
    def of(cls, options: LatencyTarget | Mapping[str, Any] | None) -> LatencyTarget:
        """The target an options node (checked) names; a LatencyTarget is itself."""
        if isinstance(options, LatencyTarget):
            return options
        options = dict(options or {})
        check_latency_options(options)
        return cls(**options)

    def describe(self) -> str:
        """A few words for messages: `onnxruntime, batch 64, 1 thread`."""
        threads = f"{self.threads} thread" + ("s" if self.threads > 1 else "")
        return f"{self.runtime}, batch {self.batch_size}, {threads}"

    def key(self) -> tuple[Any, ...]:
        """What a measurement on this target depends on beyond the models: the target, its
        protocol and the CPU (model and ISA). A remembered reduction is keyed by it."""
        cpu = cpu_info()
        return (type(self).__qualname__, repr(self), cpu.model, cpu.isa)

    def record(self) -> dict[str, Any]:
        """The ledger's keys naming this target."""
        return {
            "latency_runtime": self.runtime,
            "latency_batch_size": self.batch_size,
            "latency_threads": self.threads,
        }

    def reduction(self, input_shape: Sequence[int]) -> Reduction:
        """The Reduction a `unit=latency` search aims at: 1 - cut ms / dense ms on this
        target, the two measured interleaved, on inputs of `input_shape` (C, H, W)."""

        def of(dense: nn.Module, cut: nn.Module) -> float:
            before, after = self.pair_ms(dense, cut, input_shape)
            return 1.0 - after / before

        return of

    def pair_ms(
        self,
        dense: nn.Module,
        cut: nn.Module,
        input_shape: Sequence[int],
        clock: Clock = time.perf_counter,
    ) -> tuple[float, float]:
        """(dense ms, cut ms): median milliseconds per batch of `input_shape` (C, H, W) of the
        two models on this target, measured interleaved in one run."""
        ms = self.times_ms({"dense": dense, "cut": cut}, input_shape, clock)
        return ms["dense"], ms["cut"]

    def times_ms(
        self,
        models: Mapping[str, nn.Module],
        input_shape: Sequence[int],
        clock: Clock = time.perf_counter,
    ) -> dict[str, float]:
        """Median milliseconds per batch of `input_shape` (C, H, W) of each of `models` (by
        name) on this target, all measured interleaved in one run."""
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(self.batch_size, *input_shape, generator=generator)
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with tempfile.TemporaryDirectory(prefix="kdprune-latency-") as folder:
                calls = {
                    name: self._call(model, x, Path(folder) / f"model{i}")
                    for i, (name, model) in enumerate(models.items())
                }
                return interleaved_ms(calls, self.repeats, self.warmup, clock)
        finally:
            torch.set_num_threads(previous)

    def _call(self, model: nn.Module, x: torch.Tensor, stem: Path) -> Callable[[], Any]:
        """One forward of a deployed copy of `model` (masks folded, eval, CPU) on `x`."""
        copy = clone_model(model).cpu().eval()
        make_permanent(copy)
        if self.runtime == "eager":

            def call() -> Any:
                with torch.inference_mode():
                    return copy(x)

            return call
        from kdprune.export import ort_session

        path = stem.with_suffix(".onnx")
        path.write_bytes(self._onnx(copy, x, path))
        session, feed = ort_session(path, self.threads), {"input": x.numpy()}
        return lambda: session.run(["logits"], feed)

    def _onnx(self, model: nn.Module, x: torch.Tensor, path: Path) -> bytes:
        """The ONNX file this runtime times for `model` on `x` (INT8 where it quantizes),
        exported once per architecture in a process (`EXPORTS`)."""
        from kdprune.export import export_module

        key = (repr(model), tuple(x.shape), self.runtime)
        if key not in EXPORTS:
            export_module(model, x, path)
            if self.runtime == "onnxruntime_int8":
                path = _int8(path, x)
            EXPORTS.remember(key, path.read_bytes())
        return EXPORTS[key]


class Exports(dict):
    """(architecture, input shape, runtime) -> ONNX file bytes, for the life of the process.

    A search times many cuts against the same dense model, and an export costs seconds (the
    dynamo exporter rebuilds its operator registry each call) where a small model runs in
    milliseconds. The time of a forward pass depends on the architecture (every layer's type,
    widths, kernel and stride: `repr`) and the input, not on the weights' values, so a file
    exported for one set of weights times every other set of the same architecture."""

    LIMIT = 64  # files; a long sweep worker that sees many architectures starts over past it

    def remember(self, key: tuple[Any, ...], blob: bytes) -> None:
        if len(self) >= self.LIMIT:
            self.clear()
        self[key] = blob


EXPORTS = Exports()


def _int8(fp32: Path, x: torch.Tensor) -> Path:
    """The static INT8 (QDQ) file of `fp32`, calibrated on `x` (seeded random images)."""
    from kdprune.quantization.calibration_images import CalibrationReader
    from kdprune.quantization.onnx_ptq import quantize_onnx

    return quantize_onnx(fp32, fp32.with_suffix(".int8.onnx"), CalibrationReader(x))


def latency_record(
    target: LatencyTarget,
    ratio: float,
    dense: nn.Module,
    compressed: nn.Module,
    input_shape: Sequence[int],
) -> dict[str, Any]:
    """The ledger's latency-target keys of a `unit=latency` run: the target, the latency
    reduction asked for (`ratio`), both models' latency on it, measured interleaved, and the
    CPU they were measured on."""
    before, after = target.pair_ms(dense, compressed, input_shape)
    return {
        **target.record(),
        "latency_target_reduction": float(ratio),
        "latency_target_speedup": 1.0 / (1.0 - float(ratio)),
        "latency_ms_before": before,
        "latency_ms_after": after,
        "latency_speedup": before / after,
        **cpu_info().record(),
    }
