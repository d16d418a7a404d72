"""`kdprune report` and `kdprune evaluate`: files written, selection on val, errors in one line."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from PIL import Image

from kdprune import commands
from kdprune.app import run
from kdprune.config import instantiate
from kdprune.reporting import pareto_mask
from kdprune.results import write_metrics

ORDERS = ("prune_then_distill", "distill_then_prune", "joint")
STAGES = {
    "prune_then_distill": ["distill", "distill"],
    "distill_then_prune": ["distill", "finetune"],
    "joint": ["joint", "finetune"],
}
# (order, ratio) -> per-seed (val_acc, test_acc). For prune_then_distill, ratio 0.3 wins on val but
# ratio 0.6 wins on test: the report must pick 0.3.
ACCS = {
    ("prune_then_distill", 0.3): [(0.90, 0.80), (0.92, 0.82)],
    ("prune_then_distill", 0.6): [(0.85, 0.88), (0.87, 0.90)],
    ("distill_then_prune", 0.3): [(0.70, 0.72), (0.72, 0.70)],
    ("distill_then_prune", 0.6): [(0.60, 0.75), (0.62, 0.77)],
    ("joint", 0.3): [(0.50, 0.55), (0.52, 0.51)],
    ("joint", 0.6): [(0.65, 0.45), (0.63, 0.47)],
}


def fake_metrics(order: str, ratio: float, seed: int, val: float, test: float) -> dict:
    """A metrics dict with every ledger key the report reads."""
    params_after = int(10_000 * (1 - ratio) ** 2)
    return {
        "order": order,
        "model": "lenet5",
        "dataset": "digits",
        "seed": seed,
        "method": "l1",
        "kd": "hinton",
        "target_ratio": ratio,
        "unit": "channels",
        "params_before": 10_000,
        "params_after": params_after,
        "params_removed_fraction": 1 - params_after / 10_000,
        "nonzero_fraction": 1.0,
        "macs_before": 50_000,
        "macs_after": 50_000 * (1 - ratio) ** 2,
        "macs_speedup": 1 / (1 - ratio) ** 2,
        "channel_ratio": ratio,
        "cpu_latency_ms_bs1_before": 1.0,
        "cpu_latency_ms_bs1_after": 0.8,
        "cpu_speedup_bs1": 1.25,
        "cpu_latency_ms_bs64_before": 4.0,
        "cpu_latency_ms_bs64_after": 2.0,
        "cpu_speedup_bs64": 2.0,
        "file_size_bytes": 40_000,
        "teacher_val_acc": 0.95,
        "teacher_test_acc": 0.94,
        "after_prune_val_acc": val / 2,
        "val_acc": val,
        "test_acc": test,
        "timings": {"teacher": 1.0, "prune": 0.1, "total": 3.0},
        "history": [{"stage": "teacher", "epoch": 1, "val_acc": 0.9}]
        + [{"stage": s, "epoch": i + 1, "val_acc": val} for i, s in enumerate(STAGES[order])],
    }


@pytest.fixture
def multirun(tmp_path: Path) -> Path:
    """A fake multirun: 3 orders x 2 ratios x 2 seeds, one numbered folder per run."""
    root = tmp_path / "multirun"
    job = 0
    for (order, ratio), seeds in ACCS.items():
        for seed, (val, test) in enumerate(seeds):
            write_metrics(root / str(job), fake_metrics(order, ratio, seed, val, test))
            job += 1
    return root


def section(markdown: str, title: str) -> str:
    """The text of a `## title` section, up to the next `## ` heading."""
    return markdown.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def table_row(text: str, order: str) -> list[str]:
    """The cells of the markdown table row that starts with `order`."""
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {order} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def assert_png(path: Path) -> None:
    assert path.stat().st_size > 10_000
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 500 and image.size[1] > 400


def test_report_writes_ledger_csv_plot_and_markdown(multirun: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert commands.main(["report", str(multirun), "--out", str(out)]) == 0
    csv = pd.read_csv(out / "pruning_comparison.csv")
    assert len(csv) == 12
    ledger = set(fake_metrics("joint", 0.3, 0, 0.5, 0.5)) - {"timings", "history"}
    assert ledger <= set(csv.columns)
    assert {"time_teacher", "time_prune", "time_total", "run_dir"} <= set(csv.columns)
    assert "history" not in csv.columns and "timings" not in csv.columns
    assert sorted(Path(p).name for p in csv["run_dir"]) == sorted(str(i) for i in range(12))
    assert_png(out / "accuracy_vs_sparsity.png")
    assert not (out / "pareto.png").exists()
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporary file
    stdout = capsys.readouterr().out
    for name in ("pruning_comparison.csv", "accuracy_vs_sparsity.png", "PRUNING_REPORT.md"):
        assert str(out / name) in stdout
    md = (out / "PRUNING_REPORT.md").read_text()
    assert "](accuracy_vs_sparsity.png)" in md
    assert "same 2 epochs" in section(md, "Settings")


def test_best_per_order_is_selected_on_val_and_reports_test(multirun: Path, capsys) -> None:
    assert commands.main(["report", str(multirun)]) == 0
    best = section((multirun / "PRUNING_REPORT.md").read_text(), "Best configuration per order")
    assert "selected by validation accuracy" in best.lower()
    # prune_then_distill: ratio 0.3 has the higher val (0.91 vs 0.86) but lower test (0.81 vs 0.89)
    cells = table_row(best, "prune_then_distill")
    assert cells[3] == "0.3"
    assert cells[4] == "0.9100 ± 0.0141" and cells[5] == "0.8100 ± 0.0141"
    assert table_row(best, "distill_then_prune")[3] == "0.3"  # val 0.71 vs 0.61; test 0.71 vs 0.76
    assert table_row(best, "joint")[3] == "0.6"  # val 0.64 vs 0.51; test 0.46 vs 0.53
    summary = capsys.readouterr().out
    assert re.search(
        r"prune_then_distill .*ratio 0\.3: val 0\.9100 ± 0\.0141, test 0\.8100", summary
    )


def test_main_table_has_mean_and_std_over_seeds(multirun: Path) -> None:
    assert commands.main(["report", str(multirun)]) == 0
    results = section((multirun / "PRUNING_REPORT.md").read_text(), "Results")
    rows = [ln for ln in results.splitlines() if ln.startswith("| joint |")]
    assert len(rows) == 2
    cells = [c.strip() for c in rows[1].strip("|").split("|")]  # joint, ratio 0.6
    assert cells[3:6] == ["0.6", "2", "0.4600 ± 0.0141"]
    assert cells[6] == "0.6400 ± 0.0141"
    assert cells[7] == "84.0 ± 0.0 %"


def test_one_seed_reports_no_spread(tmp_path: Path) -> None:
    for job, ratio in enumerate((0.3, 0.6)):
        write_metrics(tmp_path / str(job), fake_metrics("joint", ratio, 0, 0.5 + ratio, 0.5))
    assert commands.main(["report", str(tmp_path)]) == 0
    md = (tmp_path / "PRUNING_REPORT.md").read_text()
    assert "±" not in section(md, "Results")
    assert table_row(section(md, "Best configuration per order"), "joint")[3] == "0.6"


def test_report_with_macs_speedup_axis_and_pareto(multirun: Path) -> None:
    assert commands.main(["report", str(multirun), "--x", "macs_speedup", "--pareto"]) == 0
    assert_png(multirun / "accuracy_vs_macs_speedup.png")
    assert_png(multirun / "pareto.png")
    assert "](pareto.png)" in (multirun / "PRUNING_REPORT.md").read_text()


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "{empty}"],
        ["report", "{empty}/missing"],
        ["report", "{empty}", "--x", "latency"],
        ["report"],
        ["report", "--storage", "sqlite:///{empty}/none.db", "--study", "s"],
        ["evaluate", "{empty}/model.pt", "--dataset", "digits"],
        ["export-onnx", "{empty}/model.pt"],
    ],
)
def test_user_errors_are_one_line_and_exit_2(argv: list[str], tmp_path: Path, capsys) -> None:
    argv = [a.format(empty=tmp_path) for a in argv]
    assert commands.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdprune: error: ") and err.count("\n") == 1
    assert not (tmp_path / "none.db").exists()  # a missing study is not created


def make_study(tmp_path: Path, multirun: Path, directions: list[str]) -> str:
    """A study over the fake runs: one trial per run, values = (val_acc[, macs_speedup])."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="s", directions=directions)
    dist = {"ratio": optuna.distributions.FloatDistribution(0.0, 0.9)}
    for job in range(12):
        csv_row = fake_metrics(*_job(job))
        values = [csv_row["val_acc"], csv_row["macs_speedup"]][: len(directions)]
        study.add_trial(
            optuna.trial.create_trial(
                params={"ratio": csv_row["target_ratio"]},
                distributions=dist,
                values=values,
                user_attrs={"run_dir": str(multirun / str(job))},
            )
        )
    return storage


def _job(job: int) -> tuple[str, float, int, float, float]:
    (order, ratio), seeds = list(ACCS.items())[job // 2]
    return (order, ratio, job % 2, *seeds[job % 2])


def test_report_on_a_single_objective_study(multirun: Path, tmp_path: Path, capsys) -> None:
    storage = make_study(tmp_path, multirun, ["maximize"])
    assert commands.main(["report", "--storage", storage, "--study", "s"]) == 0
    csv = pd.read_csv(tmp_path / "pruning_comparison.csv")  # default out: the database's folder
    assert len(csv) == 12 and {"trial_number", "value_0", "param_ratio"} <= set(csv.columns)
    assert not (tmp_path / "pareto.png").exists()
    study = section((tmp_path / "PRUNING_REPORT.md").read_text(), "Optuna study")
    assert "Best trial" in study
    assert "| #1 | 0.92 | 0.3 |" in study  # the highest val_acc: prune_then_distill 0.3, seed 1
    assert "#1: val_acc 0.92" in capsys.readouterr().out


def test_report_on_a_two_objective_study_draws_the_pareto_front(
    multirun: Path, tmp_path: Path
) -> None:
    storage = make_study(tmp_path, multirun, ["maximize", "maximize"])
    out = tmp_path / "out"
    assert commands.main(["report", "--storage", storage, "--out", str(out)]) == 0
    assert_png(out / "pareto.png")
    study = section((out / "PRUNING_REPORT.md").read_text(), "Optuna study")
    assert "objectives: val_acc (maximize), macs_speedup (maximize)" in study
    pareto = sorted(int(n) for n in re.findall(r"^\| #(\d+) \|", study, flags=re.M))
    # speed-up is 2.04 at ratio 0.3 and 6.25 at 0.6; best val at each: trial 1 (0.92), 3 (0.87)
    assert pareto == [1, 3]


def test_pareto_mask_keeps_only_non_dominated_points() -> None:
    x = [1.0, 2.0, 3.0, 2.0, 1.0]
    y = [0.9, 0.8, 0.5, 0.7, 0.9]
    assert pareto_mask(x, y, (True, True)).tolist() == [True, True, True, False, True]
    assert pareto_mask(x, y, (False, True)).tolist() == [True, False, False, False, True]


def test_evaluate_reproduces_the_runs_test_accuracy(make_cfg, tmp_path: Path, capsys) -> None:
    cfg = make_cfg("teacher.epochs=1", "schedule.distill_epochs=1", "schedule.finetune_epochs=1")
    metrics = run(cfg, tmp_path / "run")
    capsys.readouterr()
    assert commands.main(["evaluate", metrics["model_file"], "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    match = re.search(r"digits test accuracy ([0-9.]+) \((\d+)/(\d+)\)", out)
    assert match, out
    correct, n = int(match[2]), int(match[3])
    assert correct == round(metrics["test_acc"] * n)
    assert float(match[1]) == pytest.approx(metrics["test_acc"], abs=5e-5)


def test_export_onnx_gives_the_runs_test_accuracy(make_cfg, tmp_path: Path, capsys) -> None:
    ort = pytest.importorskip("onnxruntime")
    cfg = make_cfg("teacher.epochs=1", "schedule.distill_epochs=1", "schedule.finetune_epochs=1")
    metrics = run(cfg, tmp_path / "run")
    out = tmp_path / "exported" / "model.onnx"
    assert commands.main(["export-onnx", metrics["model_file"], "--out", str(out)]) == 0
    assert "checked against PyTorch with ONNX Runtime" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["model.onnx"]  # one self-contained file
    test = instantiate(cfg.dataset.splits).test
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": test.images.numpy()})[0]
    assert (logits.argmax(1) == test.labels.numpy()).mean() == pytest.approx(metrics["test_acc"])


def _image_folder(root: Path) -> Path:
    """A two-class folder of 16x16 images a tiny model can tell apart (red vs blue)."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for c, colour in enumerate(((200, 30, 30), (30, 30, 200))):
        (root / "train" / str(c)).mkdir(parents=True)
        for i in range(24):
            noise = torch.randint(-25, 26, (3,), generator=gen).tolist()
            pixel = tuple(v + n for v, n in zip(colour, noise, strict=True))
            Image.new("RGB", (16, 16), pixel).save(root / "train" / str(c) / f"{i}.png")
    return root


def test_evaluate_takes_overrides_for_a_moved_image_folder(make_cfg, tmp_path, capsys) -> None:
    import shutil

    first = _image_folder(tmp_path / "images")
    folder = ["dataset=imagefolder", "dataset.num_classes=2", "dataset.image_size=16"]
    cfg = make_cfg(*folder, f"dataset.splits.root={first}", "teacher.epochs=1",
                   "schedule.distill_epochs=1", "schedule.finetune_epochs=1")  # fmt: skip
    metrics = run(cfg, tmp_path / "run")
    moved = tmp_path / "moved"
    shutil.move(first, moved)
    capsys.readouterr()
    argv = ["evaluate", metrics["model_file"], "--split", "test", *folder]
    assert commands.main([*argv, f"dataset.splits.root={moved}"]) == 0
    match = re.search(
        r"imagefolder test accuracy ([0-9.]+) \((\d+)/(\d+)\)", capsys.readouterr().out
    )
    assert match and float(match[1]) == pytest.approx(metrics["test_acc"], abs=5e-5)
    assert commands.main([*argv, f"dataset.splits.root={first}"]) == 2  # it moved
    assert "is not a folder" in capsys.readouterr().err
    assert commands.main(["evaluate", metrics["model_file"], "dataset.no_such_key=1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
