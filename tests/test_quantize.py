"""The `quantize` stage end to end on digits: PTQ and QAT write an INT8 ONNX model with QDQ nodes
for every layer, record its accuracy (reproduced by `kdprune evaluate`), calibrate on training
images only, and take QAT epochs out of the student's budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from compose import compose_cfg
from omegaconf import open_dict

from kdprune import commands
from kdprune.app import run
from kdprune.config import instantiate
from kdprune.data import Augment, make_loaders
from kdprune.quantization import stages
from kdprune.quantization.calibration import training_images
from kdprune.quantization.checks import check_quantize_budget
from kdprune.quantization.onnx_graph import layer_precision, op_counts

BUDGET = ["budget.student_epochs=3", "budget.finetune_epochs=2", "teacher.epochs=2"]
LENET_LAYERS = 5  # two convs, three linear layers


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One PTQ and one QAT run sharing a teacher; the images PTQ calibrated on, recorded."""
    root = tmp_path_factory.mktemp("quantize")
    calibrated: list[torch.Tensor] = []
    quantize_onnx = stages.quantize_onnx

    def spy(fp32, out, reader, *args, **kwargs):
        calibrated.append(torch.from_numpy(reader.images.copy()))
        return quantize_onnx(fp32, out, reader, *args, **kwargs)

    out: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stages, "quantize_onnx", spy)
        for name, extra in (("ptq", ["quantize.calibration_images=300"]), ("qat", [])):
            cfg = compose_cfg(*BUDGET, f"quantize={name}", *extra)
            with open_dict(cfg):
                cfg.paths.cache_dir, cfg.paths.data_dir = str(root / "cache"), str(root / "data")
            out[name] = run(cfg, root / name)
    out["calibrated"] = calibrated
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
    from kdprune.tracking.sweep_callback import _int8_charts, size_data, sweep_rows

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
    points = size_data(sweep_rows(root))
    assert sorted(p[1] for p in points) == ["FP32", "FP32", "INT8 (ptq)", "INT8 (qat)"]
    assert {"int8_runs", "test_acc_vs_size"} <= _int8_charts(sweep_rows(root)).keys()


def test_reports_without_int8_runs_have_no_size_figure(tmp_path: Path) -> None:
    from fake_runs import fake_metrics

    from kdprune.reporting import write_report
    from kdprune.reporting.runs import ledger_frame, ledger_row

    rows = [ledger_row(fake_metrics("joint", 0.5, s, 0.8, 0.8), tmp_path / str(s)) for s in (0, 1)]
    report = write_report(ledger_frame(rows), tmp_path)
    assert not (tmp_path / "accuracy_vs_size.png").exists()
    assert all(p.name != "accuracy_vs_size.png" for p in report.files)
    assert "## Quantization" not in (tmp_path / "PRUNING_REPORT.md").read_text()


def test_quantize_is_sweepable_from_the_command_line(tmp_path: Path) -> None:
    from compose import run_args

    from kdprune import cli

    assert cli.check_group_overrides(["quantize=none,ptq,qat"]) is None
    assert "choose from: none, ptq, qat" in cli.check_group_overrides(["quantize=none,int4"])
    args = ["-m", *run_args(tmp_path, "quantize=none,ptq,qat")]
    assert cli.check_command_line(args) is None


def test_int8_support_comes_from_the_cpu_flags(tmp_path: Path) -> None:
    from kdprune.quantization.cpu import cpu_flags, int8_support

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
