"""`make bench` code on tiny sizes: every figure comes out as a finite ratio, and is reported."""

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MODULES = (
    "cli",
    "compression",
    "cuda",
    "ddp",
    "figures",
    "fixtures",
    "latency",
    "latency_report",
    "latency_target",
    "latency_target_report",
    "markdown",
    "measure",
    "quantization",
    "quantization_report",
    "report",
    "sizes",
    "sweep",
    "targets",
)


@pytest.fixture(scope="module")
def bench() -> SimpleNamespace:
    """The modules of `benchmarks/`, a package beside kdprune that is not installed, imported
    from the repository root as `python -m benchmarks` does."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT))
        modules = {name: importlib.import_module(f"benchmarks.{name}") for name in MODULES}
    return SimpleNamespace(**modules)


def finite_ratios(record: dict) -> dict[str, float]:
    ratios = record["ratios"]
    assert ratios, "a figure without a ratio"
    for name, value in ratios.items():
        assert math.isfinite(value) and value > 0, (name, value)
    return ratios


@pytest.mark.slow  # `make bench` itself; the bench entry-point test stays in `make test`
def test_training_kd_and_latency_figures_are_finite_ratios(bench: SimpleNamespace) -> None:
    sizes = bench.sizes.Sizes.quick()
    results = bench.figures.run_figures(sizes, ["training", "kd", "latency"])
    figures = results["figures"]
    assert finite_ratios(figures["training"]).keys() == {"engine_vs_bare_throughput"}
    assert finite_ratios(figures["kd"]).keys() >= {
        "kd_cached_vs_ce_epoch",
        "kd_uncached_vs_ce_epoch",
    }
    latency = finite_ratios(figures["latency"])
    # lenet5 at 2x and 4x, two batch sizes, eager and ONNX Runtime
    assert len(latency) == 2 * len(sizes.latency_batches) * 2
    for row in figures["latency"]["rows"]:
        assert row["macs_speedup"] > 1.5  # the compressed models really lost MACs
        assert row["ratio"] == pytest.approx(row["measured_speedup"] / row["macs_speedup"])
    meta = results["meta"]
    assert meta["machine"]["threads"] == sizes.threads and meta["commit"]
    text = bench.report.render(results)
    assert "(a) training images/s" in text and "(d) measured / MACs speed-up" in text
    assert f"`{meta['commit']}`" in text and "make bench ARGS='--only latency'" in text


def test_ddp_figure_times_two_spawned_ranks_against_one_process(bench: SimpleNamespace) -> None:
    record = bench.ddp.measure(bench.sizes.Sizes.quick())
    (ratio,) = finite_ratios(record).values()
    assert record["targets"] == {"two_ranks_vs_one_epoch": "<= 0.7"}
    assert record["met"]["two_ranks_vs_one_epoch"] == (ratio <= 0.7)
    assert set(record["samples"]) == {"two_ranks", "one_process"}
    (row,) = bench.ddp.summary(record)
    assert row[0].startswith("(g) epoch time, 2 processes") and row[2] == "≤ 0.7×"
    assert "make bench ARGS='--only ddp'" in "\n".join(bench.ddp.section(record))


def test_cuda_figure_is_skipped_without_a_device_and_runs_on_cpu(bench: SimpleNamespace) -> None:
    sizes = bench.sizes.Sizes.quick()
    if not torch.cuda.is_available():
        skipped = bench.cuda.measure(sizes)
        assert skipped["skipped"] == "no CUDA device" and skipped["ratios"] == {}
        assert "skipped: no CUDA device" in "\n".join(bench.cuda.section(skipped))
    on_cpu = bench.cuda.measure(sizes, device=torch.device("cpu"))  # the same code, CPU tensors
    assert finite_ratios(on_cpu).keys() == {
        "resident_amp_cl_vs_dataloader",
        "dataloader_amp_cl_vs_dataloader",
    }


def test_sweep_overhead_is_wall_time_minus_stage_timings(bench: SimpleNamespace) -> None:
    runs = [
        {"timings": {"teacher": 3.0, "distill": 5.0, "total": 9.0}},
        {"timings": {"teacher": 0.0, "distill": 6.0, "measure": 1.0, "total": 7.5}},
    ]
    split = bench.sweep.sweep_overhead(20.0, runs)
    assert split["stages_s"] == pytest.approx(15.0)
    assert split["overhead_s"] == pytest.approx(5.0)
    assert split["outside_runs_s"] == pytest.approx(3.5)
    assert split["untimed_in_runs_s"] == pytest.approx(1.5)


def test_fixed_cost_is_the_intercept_of_latency_against_macs(bench: SimpleNamespace) -> None:
    dense, floor = (100.0, 2.0 + 0.05 * 100), (2.0, 2.0 + 0.05 * 2)
    assert bench.latency.fixed_cost_ms(dense, floor) == pytest.approx(2.0)
    # half of a 10 ms dense call fixed: a 4x MACs cut leaves 5 + 5 / 4 ms (1.6x, ratio 0.4)
    assert bench.latency.expected_ms((100.0, 10.0), 5.0, 25.0, 0.0, 3.0) == pytest.approx(6.25)
    assert bench.latency.expected_ms((100.0, 10.0), 0.0, 25.0, 0.0, 3.0) == pytest.approx(2.5)
    # 10 of the 25 MACs left in narrow convs that run 3x slower per MAC: 5 + 0.05 * (25 + 20)
    assert bench.latency.expected_ms((100.0, 10.0), 5.0, 25.0, 10.0, 3.0) == pytest.approx(7.25)


def test_narrowed_macs_count_convs_pruned_below_a_vector_block(bench: SimpleNamespace) -> None:
    compression = bench.compression
    dense = bench.fixtures.build("resnet20", 3, 32).eval()
    example = torch.randn(1, 3, 32, 32)
    assert compression.narrowed_macs(dense, dense, example) == 0
    half = compression.compress(dense, example, 0.75, (8,))[0]  # 16-wide stage cut to 8
    narrow = compression.narrowed_macs(dense, half, example)
    convs, before = compression.conv_macs(half, example), compression.conv_macs(dense, example)
    # every conv now under 16 wide, but the 3-channel stem, which was under 16 already
    expected = sum(m for name, (m, c_in, c_out, _) in convs.items() if min(c_in, c_out) < 16)
    assert narrow == expected - convs["conv1"][0]
    assert before["conv1"][1] == 3
    assert 0 < narrow < sum(m for m, *_ in convs.values())
    # No conv cut below 16 channels: ResNet-20 keeps its 16-wide stage, so fewer than 60% go.
    floor = compression.wide_floor_macs(dense, example)
    total = sum(m for m, *_ in compression.conv_macs(dense, example).values())
    assert 0.4 < floor / total < 0.5


def test_merge_keeps_figures_not_rerun(bench: SimpleNamespace) -> None:
    old = {"meta": {"commit": "a"}, "figures": {"training": {"x": 1}, "kd": {"x": 2}}}
    new = {"meta": {"commit": "b"}, "figures": {"kd": {"x": 3}}}
    merged = bench.figures.merge(old, new)
    assert merged["meta"]["commit"] == "b"
    assert merged["figures"] == {"training": {"x": 1}, "kd": {"x": 3}}


@pytest.mark.slow
def test_quick_bench_writes_markdown_and_json(bench: SimpleNamespace, tmp_path: Path) -> None:
    md, js = tmp_path / "BENCHMARKS.md", tmp_path / "results.json"
    assert bench.cli.main(["--quick", "--json", str(js), "--markdown", str(md)]) == 0
    results = json.loads(js.read_text())
    assert list(results["figures"]) == list(bench.figures.FIGURES)
    sweep = results["figures"]["sweep"]
    assert sweep["runs"] == 3 and sweep["ratios"]["teacher_trainings"] == 1
    assert 0 < sweep["ratios"]["overhead_share"] < 1
    for name in ("training", "kd", "sweep", "latency"):
        finite_ratios(results["figures"][name])
    text = md.read_text()
    assert "teacher trainings in the 3-run orders sweep" in text and "| 1 |" in text


def test_rows_missing_against_their_expectation_say_where_the_time_went(
    bench: SimpleNamespace,
) -> None:
    split = bench.latency.op_split(
        {"aten::conv": 6.0, "aten::bn": 2.0, "aten::add": 0.5, "aten::x": 0.25},
        {"aten::conv": 3.0, "aten::bn": 1.0, "aten::x": 0.5, "aten::y": 0.1},
        top=2,
    )
    assert split == {
        "aten::conv": [6.0, 3.0],
        "aten::bn": [2.0, 1.0],
        "other ops": [0.75, pytest.approx(0.6)],
    }
    row = {"model": "m", "compression": "4x", "batch": 64, "runtime": "eager"}
    rows = [
        {**row, "ratio": 0.6, "ratio_bound": 0.8, "macs_speedup": 4.0, "op_ms": split},
        {**row, "ratio": 0.6, "ratio_bound": 0.5, "macs_speedup": 4.0},  # explained: left out
        {**row, "ratio": 0.9, "ratio_bound": 0.8, "macs_speedup": 4.0},  # met: left out
    ]
    lines = bench.latency_report._unexplained(rows)
    assert len([line for line in lines if line.startswith("- ")]) == 1
    assert "conv 6.00 → 3.00 (2.00×)" in lines[2]
    assert bench.latency_report._unexplained(rows[1:]) == []


def test_targets_are_defined_once_recorded_and_shown(bench: SimpleNamespace) -> None:
    targets, cell = bench.targets, bench.markdown.target_cell
    record = bench.measure.figure("training", {"engine_vs_bare_throughput": 0.9})
    assert record["targets"] == targets.TARGETS["training"]
    assert record["targets"] == {"engine_vs_bare_throughput": ">= 0.95"}
    assert record["met"] == {"engine_vs_bare_throughput": False}
    assert record["command"] == "make bench ARGS='--only training'"
    latency = bench.measure.figure("latency", {"m/2x/bs1/eager": 0.8, "m/4x/bs1/eager": 0.5})
    assert set(latency["targets"].values()) == {targets.LATENCY}
    assert latency["met"] == {"m/2x/bs1/eager": True, "m/4x/bs1/eager": False}
    assert targets.LATENCY_RATIO == 0.7
    assert cell(targets.TARGETS["kd"]["kd_cached_vs_ce_epoch"], "×") == "≤ 1.15×"
    assert cell(targets.TARGETS["sweep"]["teacher_trainings"]) == "1"
    assert cell(targets.TARGETS["sweep"]["overhead_share"], "%") == "< 5%"
    assert cell(targets.LATENCY) == "≥ 0.7"


def test_make_bench_entry_point_runs_from_the_repository_root() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m benchmarks")
    assert "--only" in proc.stdout and "--quick" in proc.stdout


def test_int8_time_splits_into_kernels_conversions_and_other_ops(bench: SimpleNamespace) -> None:
    fp32 = {"Conv": 8.0, "Gemm": 1.0, "ReduceMean": 1.0}
    int8 = {"QLinearConv": 3.0, "QGemm": 1.0, "QuantizeLinear": 0.5, "DequantizeLinear": 0.3,
            "Transpose": 0.2, "QLinearAdd": 1.0}  # fmt: skip
    split = bench.quantization.split_row(fp32, int8)
    assert split["kernel_speedup"] == pytest.approx(9.0 / 4.0)
    assert split["conversion_share"] == pytest.approx(1.0 / 6.0)
    assert split["other_share"] == pytest.approx(1.0 / 6.0)
    assert split["kernel_share_fp32"] == pytest.approx(0.9)


def test_int8_rows_that_miss_are_out_of_reach_or_flagged(bench: SimpleNamespace) -> None:
    row = {"kernel_speedup": 2.0, "conversion_share": 0.1, "other_share": 0.1,
           "kernel_share_fp32": 0.9, "fp32_ms": 2.0}  # fmt: skip
    rows = [
        {**row, "model": "a", "batch": 64, "int8_ms": 1.0, "speedup": 2.0, "bound": 2.2},
        {**row, "model": "b", "batch": 64, "int8_ms": 4.0, "speedup": 0.5, "bound": 0.6},
        {**row, "model": "c", "batch": 64, "int8_ms": 1.25, "speedup": 1.6, "bound": 1.9},
    ]
    record = bench.measure.figure("quantization", {f"{r['model']}/2x/bs64": r["speedup"]
                                                    for r in rows})  # fmt: skip
    assert record["met"] == {"a/2x/bs64": True, "b/2x/bs64": False, "c/2x/bs64": False}
    assert set(record["targets"].values()) == {bench.targets.QUANTIZATION}
    (summary,) = bench.quantization_report.summary({"rows": rows})
    assert summary[1:] == ["0.50×", "≥ 1.8×", "1 of 3; 1 out of reach here (bound < 1.8×, see "
                                               "(f)); **1 not met**"]  # fmt: skip
    lines = bench.quantization_report._misses(rows)
    assert [line[:7] for line in lines if line.startswith("- ")] == ["- b 2x,", "- c 2x,"]
    assert "INT8 is *slower* than FP32 here; out of reach here" in lines[2]
    assert "**not explained**" in lines[3]


@pytest.mark.slow
def test_quick_quantization_figure_is_finite_and_rendered(bench: SimpleNamespace) -> None:
    sizes = bench.sizes.Sizes.quick()
    record = bench.figures.run_figures(sizes, ["quantization"])["figures"]["quantization"]
    assert finite_ratios(record).keys() == {f"lenet5/2x/bs{b}" for b in sizes.latency_batches}
    assert record["models"]["lenet5"]["int8_bytes"] < record["models"]["lenet5"]["fp32_bytes"]
    assert [k["channels"] for k in record["kernels"]] == [w for w, _ in sizes.quantization_kernels]
    text = "\n".join(bench.quantization_report.section(record))
    assert "## (f) INT8 vs FP32" in text and "make bench ARGS='--only quantization'" in text


def test_latency_targets_show_the_three_cuts_side_by_side(bench: SimpleNamespace) -> None:
    """(h)'s Markdown from a record (no timing): a model's three cuts on one line (one not
    made: a dash), a refused one named with its floor, and the summary's worst latency cut
    against its target."""
    rows = [
        {"model": "resnet20", "target_speedup": 2.0, "unit": "macs", "key": "2x-macs",
         "round_to": 16, "dense_ms": 40.0, "cut_ms": 28.0, "achieved": 40 / 28},
        {"model": "resnet20", "target_speedup": 2.0, "unit": "latency", "key": "2x-latency",
         "allocation": "uniform", "round_to": 8, "dense_ms": 40.0, "cut_ms": 21.0,
         "achieved": 40 / 21},
        {"model": "resnet20", "target_speedup": 2.0, "unit": "latency", "allocation": "latency",
         "key": "2x-latency-latency", "round_to": 16, "dense_ms": 40.0, "cut_ms": 19.5,
         "achieved": 40 / 19.5},
        {"model": "lenet5", "target_speedup": 2.0, "unit": "macs", "key": "2x-macs",
         "round_to": 8, "dense_ms": 1.0, "cut_ms": 0.8, "achieved": 1.25},
        {"model": "lenet5", "target_speedup": 2.0, "unit": "latency",
         "refused": "the measured floor is 0.7 ms of the dense model's 1 ms"},
    ]  # fmt: skip
    for row in rows:
        if "achieved" in row:
            row["closeness"] = 1 - abs(row["achieved"] / row["target_speedup"] - 1)
    ratios = {f"resnet20/2x/latency/{r['allocation']}": r["closeness"] for r in rows[1:3]}
    record = bench.measure.figure("latency_target", ratios, rows=rows, setup="s")
    assert set(record["targets"].values()) == {">= 0.9"} and len(record["targets"]) == 2
    assert all(record["met"].values())
    text = "\n".join(bench.latency_target_report.section(record))
    assert "| resnet20 | 2.00× | 1.43× | 16 | 1.90× | 8 | 2.05× | 16 | 40.000 |" in text
    assert "| lenet5 | 2.00× | 1.25× | 8 | refused | — | — | — | 1.000 |" in text
    assert "- lenet5 2× (latency, uniform allocation): the measured floor is 0.7 ms" in text
    [summary] = bench.latency_target_report.summary(record)
    assert summary[1] == f"{1 - abs(40 / 21 / 2 - 1):.3f}"
    assert summary[3].startswith("yes; 1 refused")


def test_the_ddp_section_renders_the_record_run_figures_completes() -> None:
    """run_figures adds `seconds` (the figure's own time) to every record: the epoch times
    (g) reports must live under another key, or its section cannot render."""
    from benchmarks import ddp
    from benchmarks.measure import figure

    record = figure("ddp", {ddp.KEY: 0.8}, epoch_seconds={"two_ranks": 1.0, "one_process": 1.25},
                    setup="lenet5 on digits")  # fmt: skip
    record.update(seconds=55.0)  # as run_figures does
    text = "\n".join(ddp.section(record))
    assert "two ranks 1.00, one process 1.25" in text
    assert "spread" not in text  # a record without its samples
    record["samples"] = {"two_ranks": [0.9, 1.0, 1.2], "one_process": [1.25, 1.1, 1.4]}
    assert "two ranks 0.90–1.20 s, one process 1.10–1.40 s" in "\n".join(ddp.section(record))
