"""The `quantize` stage end to end on digits: PTQ and QAT write an INT8 ONNX model with QDQ nodes
for every layer, record its accuracy (reproduced by `kdprune evaluate`), calibrate on training
images only, and take QAT epochs out of the student's budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers.compose import compose_cfg
from omegaconf import open_dict

from kdprune import commands
from kdprune.app import run
from kdprune.data import Augment, make_loaders
from kdprune.instantiation import instantiate
from kdprune.quantization import quantize_stages
from kdprune.quantization.calibration_images import training_images
from kdprune.quantization.onnx_graph import layer_precision, op_counts
from kdprune.quantization.quantize_checks import check_quantize_budget

BUDGET = ["budget.student_epochs=3", "budget.finetune_epochs=2", "teacher.epochs=2"]
LENET_LAYERS = 5  # two convs, three linear layers


# PTQ on the kernel path this CPU gets (`auto`), QAT forced onto the path of a CPU without VNNI,
# which every CPU can run: both paths are exercised whatever CPU runs the tests.
RUNS = {
    "ptq": ["quantize.calibration_images=300"],
    "qat": ["quantize.int8_kernel_path=avx2_7bit"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One PTQ and one QAT run sharing a teacher; the images PTQ calibrated on, and the images
    QAT's INT8 check ran with PyTorch's logits on them, recorded."""
    root = tmp_path_factory.mktemp("quantize")
    calibrated: list[torch.Tensor] = []
    checked: dict[str, np.ndarray] = {}
    quantize_onnx = quantize_stages.quantize_onnx
    export_int8_graph = quantize_stages.export_int8_graph

    def spy(fp32, out, reader, *args, **kwargs):
        calibrated.append(torch.from_numpy(reader.images.copy()))
        return quantize_onnx(fp32, out, reader, *args, **kwargs)

    def spy_qat(graph, inputs, out):
        with torch.inference_mode():
            checked.update(inputs=inputs.numpy().copy(), logits=graph(inputs).float().numpy())
        return export_int8_graph(graph, inputs, out)

    out: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quantize_stages, "quantize_onnx", spy)
        patch.setattr(quantize_stages, "export_int8_graph", spy_qat)
        for name, extra in RUNS.items():
            cfg = compose_cfg(*BUDGET, f"quantize={name}", *extra)
            with open_dict(cfg):
                cfg.paths.cache_dir, cfg.paths.data_dir = str(root / "cache"), str(root / "data")
            out[name] = run(cfg, root / name)
    out["calibrated"], out["checked"] = calibrated, checked
    out["cfg"] = cfg
    return out


@pytest.mark.parametrize("stage", ["ptq", "qat"])
def test_int8_model_has_qdq_nodes_for_every_layer(runs, stage: str) -> None:
    m = runs[stage]
    path = Path(m["int8_model_file"])
    assert path.name == "model.int8.onnx" and path.parent == Path(m["model_file"]).parent
    ops = op_counts(path)
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
    layers = layer_precision(path)
    assert layers["float"] == [] and len(layers["int8"]) == LENET_LAYERS == m["int8_layers"]
    assert layer_precision(m["onnx_fp32_file"])["int8"] == []  # the FP32 file is FP32
    assert m["quantize"] == stage
    assert 0.0 <= m["int8_test_acc"] <= 1.0 and 0.0 <= m["int8_val_acc"] <= 1.0
    # INT8 weights: the file shrinks (digits' LeNet-5 is small enough for overhead to show).
    assert m["onnx_file_size_bytes_int8"] < m["onnx_file_size_bytes_fp32"]
    assert m["int8_size_reduction"] == pytest.approx(
        m["onnx_file_size_bytes_fp32"] / m["onnx_file_size_bytes_int8"]
    )
    for b in (1, 64):
        assert all(m[f"ort_latency_ms_bs{b}_{v}"] > 0 for v in ("dense", "fp32", "int8"))


@pytest.mark.parametrize("stage", ["ptq", "qat"])
@pytest.mark.parametrize("split", ["test", "val"])
def test_kdprune_evaluate_reproduces_the_recorded_int8_accuracy(runs, capsys, stage, split):
    m = runs[stage]
    overrides = ["dataset=digits", f"paths.data_dir={Path(m['model_file']).parent}/data"]
    code = commands.main(["evaluate", m["int8_model_file"], "--split", split, *overrides])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"accuracy {m[f'int8_{split}_acc']:.4f}" in printed and "ONNX Runtime" in printed


def test_ptq_calibrates_on_training_images_only(runs) -> None:
    (images,) = runs["calibrated"]
    splits = instantiate(runs["cfg"].dataset.splits)
    assert len(images) == 300 == runs["ptq"]["calibration_images"]
    rows = {tuple(x.flatten().tolist()) for x in splits.train.images}
    assert all(tuple(x.flatten().tolist()) in rows for x in images)
    assert len({tuple(x.flatten().tolist()) for x in images}) == len(images)  # no repeats


def test_training_images_are_unaugmented_seeded_training_rows(make_cfg) -> None:
    cfg = make_cfg()
    splits = instantiate(cfg.dataset.splits)
    for k, split in enumerate((splits.train, splits.val, splits.test)):
        split.images = torch.full_like(split.images, 0.0) + k  # the split is in every pixel
        split.images[:, 0, 0, 0] = torch.arange(len(split.images), dtype=torch.float)
    loaders = make_loaders(splits, 32, 32, torch.device("cpu"), Augment(2, True), 0, 0)
    images = training_images(loaders.train, 50, seed=3)
    assert images.shape[0] == 50 and (images[:, 0, 1:, :] == 0).all()  # train, not flipped
    assert images[:, 0, 0, 0].unique().numel() == 50  # 50 distinct training images
    assert torch.equal(images, training_images(loaders.train, 50, seed=3))
    assert len(training_images(loaders.train, 10**6, seed=3)) == len(splits.train.images)


def test_qat_epochs_come_out_of_the_students_budget(runs) -> None:
    m = runs["qat"]
    stages_run = [h["stage"] for h in m["history"]]
    assert stages_run.count("qat") == 1 and stages_run.count("finetune") == 1
    assert m["epochs"]["student"] == 3 == runs["ptq"]["epochs"]["student"]
    assert m["qat_epochs"] == 1


@pytest.mark.parametrize("order", ["prune_then_distill", "distill_then_prune", "joint"])
@pytest.mark.parametrize("epochs", [1, 2])
def test_every_order_keeps_its_total_with_qat(order: str, epochs: int) -> None:
    start = ["student_init=teacher"] if order == "prune_then_distill" else []
    none = compose_cfg(f"schedule={order}", *start)
    qat = compose_cfg(f"schedule={order}", *start, "quantize=qat", f"quantize.epochs={epochs}")
    check_quantize_budget(qat)  # passes: the last stage has the epochs

    def total(cfg) -> int:
        own = cfg.schedule.get("finetune_epochs", 0)
        before = {"distill_then_prune": "distill_epochs", "joint": "joint_epochs"}.get(order)
        return own + (cfg.schedule[before] if before else 0) + cfg.quantize.epochs

    assert total(qat) == total(none) == none.budget.student_epochs
    assert qat.schedule.finetune_epochs == none.schedule.finetune_epochs - epochs


def test_report_and_sweep_summary_show_fp32_and_int8(runs, tmp_path: Path) -> None:
    from kdprune.reporting import collect_runs, write_report
    from kdprune.reporting.sweep_summary import sweep_rows, sweep_tables
    from kdprune.tracking.sweep_callback import _int8_charts

    root = Path(runs["ptq"]["model_file"]).parents[1]
    ledger = collect_runs(root)
    report = write_report(ledger, tmp_path)
    assert (tmp_path / "accuracy_vs_size.png") in report.files
    text = (tmp_path / "PRUNING_REPORT.md").read_text()
    section = text.split("## Quantization")[1].split("## ")[0]
    for stage in ("ptq", "qat"):
        assert f"quantize={stage}" in section and f"{runs[stage]['int8_test_acc']:.4f}" in section
    assert sorted(ledger["int8_test_acc"]) == sorted(runs[s]["int8_test_acc"] for s in runs
                                                     if s in ("ptq", "qat"))  # fmt: skip
    tables = sweep_tables(sweep_rows(root))
    assert sorted(p[1] for p in tables.sizes.data) == ["FP32", "FP32", "INT8 (ptq)", "INT8 (qat)"]
    assert {"int8_runs", "test_acc_vs_size"} <= _int8_charts(tables).keys()


def test_reports_without_int8_runs_have_no_size_figure(tmp_path: Path) -> None:
    from helpers.fake_runs import fake_metrics

    from kdprune.reporting import write_report
    from kdprune.reporting.runs import ledger_frame, ledger_row

    rows = [ledger_row(fake_metrics("joint", 0.5, s, 0.8, 0.8), tmp_path / str(s)) for s in (0, 1)]
    report = write_report(ledger_frame(rows), tmp_path)
    assert not (tmp_path / "accuracy_vs_size.png").exists()
    assert all(p.name != "accuracy_vs_size.png" for p in report.files)
    assert "## Quantization" not in (tmp_path / "PRUNING_REPORT.md").read_text()


def test_quantize_is_sweepable_from_the_command_line(tmp_path: Path) -> None:
    from helpers.compose import run_args

    from kdprune import cli

    assert cli.check_group_overrides(["quantize=none,ptq,qat"]) is None
    assert "choose from: none, ptq, qat" in cli.check_group_overrides(["quantize=none,int4"])
    args = ["-m", *run_args(tmp_path, "quantize=none,ptq,qat")]
    assert cli.check_command_line(args) is None


def test_int8_support_comes_from_the_cpu_flags(tmp_path: Path) -> None:
    from kdprune.quantization.int8_kernels import cpu_flags, int8_support

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")  # fmt: skip
    assert int8_support(cpu_flags(info)) == "avx512_vnni"
    assert int8_support({"fpu", "sse2", "avx2"}) == "avx2"
    assert int8_support({"fp", "asimd", "asimddp"}) == "asimddp"  # Arm's Features line
    assert int8_support({"fpu", "sse2", "avx"}) is None
    assert cpu_flags(tmp_path / "missing") is None
    assert int8_support(None, "arm64") == "asimddp" and int8_support(None, "x86_64") == "unknown"


def test_onnx_files_are_compacted_alike_and_compute_the_same(runs, tmp_path: Path) -> None:
    import numpy as np
    import onnx

    from kdprune.export import export_onnx, ort_session

    m = runs["ptq"]
    for key in ("onnx_fp32_file", "int8_model_file", "onnx_dense_file"):
        graph = onnx.load(m[key]).graph
        assert not graph.value_info and all(n.name == "" for n in graph.node)
        assert not any(n.metadata_props for n in graph.node)
        assert [i.name for i in graph.input] == ["input"]
        assert [o.name for o in graph.output] == ["logits"]
        assert all(len(t.name) <= 4 for t in graph.initializer)
    plain = export_onnx(m["model_file"], tmp_path / "plain.onnx")  # names and hints kept
    x = {"input": np.random.default_rng(0).standard_normal((5, 1, 8, 8), "f4")}
    got = ort_session(m["onnx_fp32_file"]).run(["logits"], x)[0]
    np.testing.assert_allclose(got, ort_session(plain).run(["logits"], x)[0], atol=1e-6)
    assert Path(m["onnx_fp32_file"]).stat().st_size < plain.stat().st_size


def _int8_weights(path) -> list[np.ndarray]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == 3]  # INT8


@pytest.mark.parametrize(
    ("flags", "path"),
    [
        ({"avx2", "avx512f", "avx512_vnni", "amx_int8"}, "vnni"),  # AMX
        ({"avx2", "avx512f", "avx512_vnni"}, "vnni"),  # AVX-512 VNNI
        ({"avx2", "avx_vnni"}, "vnni"),  # AVX-VNNI
        ({"fp", "asimd", "asimddp"}, "vnni"),  # Arm SDOT accumulates in 32 bits too
        ({"avx2", "avx512f", "avx512bw"}, "avx2_7bit"),  # AVX-512 without VNNI
        ({"avx2", "fma"}, "avx2_7bit"),  # the AMD EPYC
        (None, "avx2_7bit"),  # no /proc/cpuinfo on x86: the range exact on every kernel
    ],
)
def test_auto_kernel_path_follows_the_cpu_flags(flags, path: str) -> None:
    from kdprune.quantization.int8_kernels import kernel_path

    chosen = kernel_path("auto", flags, machine="x86_64")
    assert chosen.name == path
    assert (chosen.weight_min, chosen.weight_max) == ((-128, 127) if path == "vnni" else (-64, 64))
    # a vpmaddubsw pair of uint8 activations and these weights fits a signed 16-bit lane
    assert (255 * 2 * max(-chosen.weight_min, chosen.weight_max) <= 32767) == (path != "vnni")
    assert kernel_path("avx2_7bit", flags, machine="x86_64").name == "avx2_7bit"  # runs anywhere


@pytest.mark.parametrize("stage", ["ptq", "qat"])
@pytest.mark.parametrize(
    ("value", "flags", "words"),
    [
        ("avx3", {"avx2", "avx512_vnni"}, ["int8_kernel_path", "auto, vnni, avx2_7bit"]),
        ("vnni", {"avx2", "avx512f"}, ["int8_kernel_path=vnni", "VNNI", "avx2_7bit"]),
    ],
)
def test_a_kernel_path_that_cannot_work_is_one_line_before_training(
    monkeypatch, capsys, tmp_path: Path, stage, value, flags, words
) -> None:
    import sys

    from helpers.compose import run_args

    from kdprune import cli
    from kdprune.quantization import int8_kernels

    monkeypatch.setattr(int8_kernels, "cpu_flags", lambda: flags)
    monkeypatch.chdir(tmp_path)
    args = run_args(tmp_path, f"quantize={stage}", f"quantize.int8_kernel_path={value}")
    monkeypatch.setattr(sys, "argv", ["kdprune", *args, f"hydra.run.dir={tmp_path}/run"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("kdprune: error: ") and all(w in lines[0] for w in words), lines
    assert not list(tmp_path.rglob("metrics.json")) and not (tmp_path / "cache").exists()


def test_each_run_records_its_kernel_path_and_uses_its_weight_range(runs) -> None:
    from kdprune.quantization.int8_kernels import resolve_kernel_path

    assert runs["qat"]["int8_kernel_path"] == "avx2_7bit"  # forced
    assert runs["ptq"]["int8_kernel_path"] == resolve_kernel_path("auto").name  # this CPU's
    for stage in ("ptq", "qat"):
        path = resolve_kernel_path(runs[stage]["int8_kernel_path"])
        weights = _int8_weights(runs[stage]["int8_model_file"])
        assert len(weights) >= LENET_LAYERS  # one int8 tensor per conv / linear weight
        assert min(w.min() for w in weights) >= path.weight_min
        assert max(w.max() for w in weights) <= path.weight_max
        # symmetric per channel: each channel's largest weight sits at the range's end
        assert max(int(np.abs(w).max()) for w in weights) >= min(-path.weight_min, path.weight_max)


def _gemm_graph(s_x: float, weight: np.ndarray, s_w: np.ndarray, s_y: float | None):
    """input -> QDQ (scale s_x) -> Gemm with int8 weights (per-row scales s_w) -> [QDQ s_y]."""
    from onnx import TensorProto, helper, numpy_helper

    def init(name, value):
        return numpy_helper.from_array(np.asarray(value), name)

    out = "logits" if s_y is None else "y"
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "sx", "zx"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["x"]),
        helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["w"], axis=0),
        helper.make_node("Gemm", ["x", "w"], [out], transB=1),
    ]
    inits = [init("sx", np.float32(s_x)), init("zx", np.uint8(0)), init("wq", weight),
             init("sw", s_w), init("zw", np.zeros(len(s_w), np.int8))]  # fmt: skip
    if s_y is not None:
        nodes += [
            helper.make_node("QuantizeLinear", ["y", "sy", "zy"], ["yq"]),
            helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["logits"]),
        ]
        inits += [init("sy", np.float32(s_y)), init("zy", np.uint8(128))]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 2])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_int8_tolerance_is_a_few_steps_through_the_classifier() -> None:
    from kdprune.quantization.tolerance import INT8_STEPS, int8_tolerance

    weight = np.array([[10, -20, 30], [-64, 1, 0]], np.int8)
    s_w = np.array([0.01, 0.002], np.float32)
    # the largest row sum of |dequantized weights|: max(60 * 0.01, 65 * 0.002) = 0.6
    allowed = int8_tolerance(_gemm_graph(0.05, weight, s_w, None))
    assert allowed == pytest.approx(INT8_STEPS * 0.05 * 0.6)
    assert int8_tolerance(_gemm_graph(0.1, weight, s_w, None)) == pytest.approx(2 * allowed)
    quantized_out = int8_tolerance(_gemm_graph(0.05, weight, s_w, 0.25))
    assert quantized_out == pytest.approx(allowed + 0.25)  # one step of the quantized logits


def test_int8_models_agree_on_an_emulated_avx2_cpu_only_with_7bit_weights(
    runs, tmp_path: Path, monkeypatch
) -> None:
    """Under `qemu-x86_64 -cpu Haswell` ONNX Runtime runs its non-VNNI kernels (vpmaddubsw):
    the 7-bit models agree with their float reference within the tolerance; the 8-bit one
    saturates there and is off by more than the check allows."""
    import onnx
    from helpers.emulated_cpu import haswell_logits, qemu_or_skip

    from kdprune.quantization import onnx_ptq
    from kdprune.quantization.calibration_images import CalibrationReader
    from kdprune.quantization.tolerance import int8_tolerance

    qemu_or_skip()
    images, fp32 = runs["calibrated"][0], runs["ptq"]["onnx_fp32_file"]
    files = {"qat7": Path(runs["qat"]["int8_model_file"])}
    files["ptq7"] = onnx_ptq.quantize_onnx(
        fp32, tmp_path / "ptq7.onnx", CalibrationReader(images), reduce_range=True
    )
    # The 8-bit file as a VNNI CPU writes it, unchecked (this CPU may lack VNNI).
    monkeypatch.setattr(onnx_ptq, "require_agreement", lambda *args: None)
    files["ptq8"] = onnx_ptq.quantize_onnx(
        fp32, tmp_path / "ptq8.onnx", CalibrationReader(images), reduce_range=False
    )
    assert max(int(np.abs(w).max()) for w in _int8_weights(files["ptq8"])) > 64
    inputs = runs["checked"]["inputs"]
    got = haswell_logits(files, inputs, tmp_path / "haswell")
    models = {name: onnx.load(str(path)) for name, path in files.items()}
    allowed = {name: int8_tolerance(model) for name, model in models.items()}
    expected = {name: onnx_ptq.qdq_reference(models[name], inputs) for name in ("ptq7", "ptq8")}
    expected["qat7"] = runs["checked"]["logits"]  # PyTorch's converted graph
    gap = {name: float(np.abs(got[name] - expected[name]).max()) for name in files}
    assert gap["qat7"] <= allowed["qat7"] and gap["ptq7"] <= allowed["ptq7"], (gap, allowed)
    assert gap["ptq8"] > allowed["ptq8"], (gap, allowed)  # the saturation the check catches


def test_the_run_table_says_int8_buys_size_not_speed_without_vnni(runs) -> None:
    from kdprune.reporting.table import int8_table

    for instructions, noted in (("avx2", True), ("avx512_vnni", False), ("amx_int8", False)):
        table = int8_table({**runs["ptq"], "int8_instructions": instructions})
        assert ("INT8 buys size, not speed" in table) == noted, table
        assert "compressed INT8" in table.splitlines()[1]


def test_int8_check_refuses_logits_beyond_the_tolerance_and_accepts_them_within(tmp_path) -> None:
    from kdprune.errors import KdpruneError
    from kdprune.quantization.files import require_agreement
    from kdprune.quantization.onnx_ptq import qdq_reference
    from kdprune.quantization.tolerance import int8_tolerance

    model = _gemm_graph(0.05, np.array([[10, -20, 30], [-64, 1, 0]], np.int8),
                        np.array([0.01, 0.002], np.float32), None)  # fmt: skip
    inputs = np.random.default_rng(0).uniform(0, 10, (8, 3)).astype(np.float32)
    reference, allowed = qdq_reference(model, inputs), int8_tolerance(model)
    require_agreement(model, inputs, reference + 0.9 * allowed, "the reference", tmp_path / "f")
    with pytest.raises(KdpruneError, match="differ from the reference by .* was not written"):
        require_agreement(model, inputs, reference + 1.1 * allowed, "the reference", tmp_path / "f")
