"""(d) CPU latency: measured vs MACs speed-up of compressed models, eager and ONNX Runtime."""

from __future__ import annotations

import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.compression import NARROW, Variant, variants, wide_floor_macs
from benchmarks.machine import ort_version
from benchmarks.measure import figure, interleaved, medians
from benchmarks.sizes import Sizes
from benchmarks.targets import LATENCY_RATIO

RUNTIMES = ("eager", "onnxruntime")


def calls_per_sample(sizes: Sizes, batch: int) -> int:
    """Forwards per timed sample: `latency_calls` at batch 1, a quarter (at least 3) above."""
    return sizes.latency_calls if batch == 1 else max(3, sizes.latency_calls // 4)


def forward_ms(call: Callable[[], Any], calls: int) -> float:
    """Median milliseconds of `calls` calls."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def eager_call(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    """A forward of `model` on `x` under inference_mode."""

    def call() -> Any:
        with torch.inference_mode():
            return model(x)

    return call


def ort_call(session: Any, x: torch.Tensor) -> Callable[[], Any]:
    """A run of the ONNX Runtime `session` on `x`."""
    feed = {"input": x.numpy()}
    return lambda: session.run(["logits"], feed)


def narrow_rate_penalty(
    runtime: str, batch: int, size: int, sizes: Sizes, folder: Path
) -> tuple[float, dict[str, float]]:
    """How many times faster per MAC a 3x3 conv + ReLU runs NARROW channels wide than half as
    wide, on `size` x `size` maps at `batch`; also each side's median ms."""
    from kdprune.export import export_module, ort_session

    sides = {}
    for width in (NARROW // 2, NARROW):
        conv = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU()).eval()
        x = torch.randn(batch, width, size, size)
        if runtime == "eager":
            call = eager_call(conv, x)
        else:
            path = folder / f"conv{width}-{size}-bs{batch}.onnx"
            export_module(conv, x, path)
            call = ort_call(ort_session(path, sizes.threads), x)
        sides[str(width)] = functools.partial(forward_ms, call, calls_per_sample(sizes, batch))
    interleaved(sides, 1)  # warm-up
    ms = medians(interleaved(sides, sizes.latency_reps))
    # The wide conv does 4x the MACs of the narrow one.
    return 4.0 * ms[str(NARROW // 2)] / ms[str(NARROW)], ms


def fixed_cost_ms(dense: tuple[float, float], floor: tuple[float, float]) -> float:
    """The intercept t0 of the line latency = t0 + k * MACs through the (MACs, ms) points of the
    dense and the floor model: the part of a call that removing MACs does not remove."""
    (m_dense, t_dense), (m_floor, t_floor) = dense, floor
    k = (t_dense - t_floor) / (m_dense - m_floor)
    return t_floor - k * m_floor


def expected_ms(
    dense: tuple[float, float], fixed_ms: float, macs: float, narrow_macs: float, penalty: float
) -> float:
    """Latency of a compressed model whose fixed cost stays `fixed_ms`, whose MACs run at the
    dense model's per-MAC rate, except `narrow_macs`, which run `penalty` times slower."""
    m_dense, t_dense = dense
    per_mac = (t_dense - fixed_ms) / m_dense
    return fixed_ms + per_mac * (macs + (penalty - 1.0) * narrow_macs)


def time_variants(vs: list[Variant], runtime: str, batch: int, sizes: Sizes) -> dict[str, float]:
    """Median ms per batch of each variant, measured interleaved."""
    c, s = vs[0].input
    x = torch.randn(batch, c, s, s)
    make = eager_call if runtime == "eager" else ort_call
    calls = calls_per_sample(sizes, batch)
    sides = {
        v.name: functools.partial(
            forward_ms, make(v.model if runtime == "eager" else v.session, x), calls
        )
        for v in vs
    }
    interleaved(sides, 1)  # warm-up
    return medians(interleaved(sides, sizes.latency_reps))


def latency_rows(model: str, vs: list[Variant], sizes: Sizes, folder: Path) -> list[dict[str, Any]]:
    """One row per (runtime, batch, compressed variant): measured vs MACs speed-up."""
    rows = []
    for runtime in RUNTIMES:
        for batch in sizes.latency_batches:
            rows += batch_rows(model, vs, runtime, batch, sizes, folder)
    return rows


def batch_rows(
    model: str, vs: list[Variant], runtime: str, batch: int, sizes: Sizes, folder: Path
) -> list[dict[str, Any]]:
    """One row per compressed variant on one runtime at one batch size."""
    ms = time_variants(vs, runtime, batch, sizes)
    penalty, conv_ms = narrow_rate_penalty(runtime, batch, vs[0].input[1], sizes, folder)
    dense, floor = vs[0], vs[-1]
    t0 = fixed_cost_ms((dense.macs, ms["dense"]), (floor.macs, ms["floor"]))
    rows = []
    for v in vs[1:-1]:
        measured, by_macs = ms["dense"] / ms[v.name], dense.macs / v.macs
        expected = expected_ms((dense.macs, ms["dense"]), t0, v.macs, v.narrow_macs, penalty)
        row = {
            "model": model,
            "compression": v.name,
            "batch": batch,
            "runtime": runtime,
            "dense_ms": ms["dense"],
            "compressed_ms": ms[v.name],
            "measured_speedup": measured,
            "macs_speedup": by_macs,
            "ratio": measured / by_macs,
            "floor_ms": ms["floor"],
            "fixed_ms": t0,
            "fixed_share": t0 / ms["dense"],
            "narrow_share": v.narrow_macs / v.macs,
            "narrow_penalty": penalty,
            "narrow_conv_ms": conv_ms,
            "expected_ms": expected,
            "ratio_bound": ms["dense"] / expected / by_macs,
            "widths": v.channels,
        }
        # A miss the fixed cost and narrow kernels do not explain: profile where the time went.
        if runtime == "eager" and row["ratio"] < LATENCY_RATIO <= row["ratio_bound"]:
            c, size = vs[0].input
            x = torch.randn(batch, c, size, size)
            row["op_ms"] = op_split(eager_op_ms(dense.model, x), eager_op_ms(v.model, x))
        rows.append(row)
    return rows


def eager_op_ms(model: nn.Module, x: torch.Tensor, calls: int = 5) -> dict[str, float]:
    """Self CPU milliseconds per forward of each aten op (torch.profiler), after a warm-up."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                model(x)
    return {e.key: e.self_cpu_time_total / 1000.0 / calls for e in prof.key_averages()}


def op_split(
    dense: dict[str, float], compressed: dict[str, float], top: int = 3
) -> dict[str, list[float]]:
    """[dense ms, compressed ms] of the `top` ops costliest in the dense model, and the rest."""
    names = sorted(dense, key=dense.get, reverse=True)[:top]
    split = {name: [dense[name], compressed.get(name, 0.0)] for name in names}
    split["other ops"] = [
        sum(v for k, v in dense.items() if k not in names),
        sum(v for k, v in compressed.items() if k not in names),
    ]
    return split


def measure(sizes: Sizes) -> dict[str, Any]:
    """(d) Measured CPU speed-up of compressed models vs their MACs speed-up."""
    rows: list[dict[str, Any]] = []
    models: dict[str, dict[str, Any]] = {}
    wide_floor: dict[str, int] = {}  # fewest MACs with no conv below NARROW channels
    with tempfile.TemporaryDirectory(prefix="kdprune-bench-latency-") as folder:
        for name in sizes.latency_models:
            vs = variants(name, sizes, Path(folder))
            models[name] = {
                v.name: {
                    "macs": v.macs,
                    "conv_widths": v.channels,
                    "round_to": v.round_to,
                    "narrow_macs": v.narrow_macs,
                }
                for v in vs
            }
            c, size = vs[0].input
            wide_floor[name] = wide_floor_macs(vs[0].model, torch.randn(1, c, size, size))
            rows += latency_rows(name, vs, sizes, Path(folder))
    ratios = {
        f"{r['model']}/{r['compression']}/bs{r['batch']}/{r['runtime']}": r["ratio"] for r in rows
    }
    return figure(
        "latency", ratios, rows=rows, models=models, wide_floor_macs=wide_floor, setup=setup(sizes)
    )


def setup(sizes: Sizes) -> str:
    """How (d) was measured, for BENCHMARKS.md."""
    return (
        f"StructuredPruner(unit='macs', ratio={list(sizes.latency_reductions)}, L1 "
        f"importance, uniform allocation, channels rounded to multiples of the first of "
        f"{list(sizes.latency_roundings)} (this CPU's channel blocks, as `prune_method.round_to: "
        f"auto` tries them) that still reaches the target, else not rounded; "
        f"the target met within {sizes.latency_default_tolerance:.0%} of the MACs, "
        f"{sizes.latency_tolerance} for some models); random weights; "
        f"eager PyTorch under inference_mode and ONNX Runtime {ort_version()} (CPU provider, "
        f"graph optimisations on) on the `kdprune.export.export_onnx` file; {sizes.threads} "
        f"thread(s); median of {sizes.latency_reps} interleaved samples of "
        f"{sizes.latency_calls} calls' median (batch 1; {calls_per_sample(sizes, 64)} "
        f"at larger batches)"
    )
