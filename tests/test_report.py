"""`kdprune report` and `kdprune evaluate`: files written, selection on val, errors in one line."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from helpers.fake_runs import fake_metrics
from PIL import Image

from kdprune import commands
from kdprune.app import run
from kdprune.instantiation import instantiate
from kdprune.reporting import pareto_mask
from kdprune.results import write_metrics

# (order, ratio) -> per-seed (val_acc, test_acc). At ratio 0.6, prune_then_distill wins on val but
# distill_then_prune wins on test: the report must pick prune_then_distill at that level.
ACCS = {
    ("prune_then_distill", 0.3): [(0.90, 0.80), (0.92, 0.82)],
    ("prune_then_distill", 0.6): [(0.85, 0.88), (0.87, 0.90)],
    ("distill_then_prune", 0.3): [(0.70, 0.72), (0.72, 0.70)],
    ("distill_then_prune", 0.6): [(0.60, 0.93), (0.62, 0.95)],
    ("joint", 0.3): [(0.50, 0.55), (0.52, 0.51)],
    ("joint", 0.6): [(0.65, 0.45), (0.63, 0.47)],
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
    fake = fake_metrics("joint", 0.3, 0, 0.5, 0.5)
    ledger = {k for k, v in fake.items() if not isinstance(v, dict | list)}
    assert ledger <= set(csv.columns)
    assert {"time_teacher", "time_prune", "time_total", "run_dir"} <= set(csv.columns)
    assert {"start_weights", "start_init", "epochs_student", "epochs_inherited"} <= set(csv.columns)
    assert {"config_fingerprint", "pairing_key"} <= set(csv.columns)
    assert csv["config_fingerprint"].nunique() == 6 and csv["pairing_key"].nunique() == 2
    for nested in ("history", "timings", "config", "config_json", "start", "epochs"):
        assert nested not in csv.columns
    assert sorted(Path(p).name for p in csv["run_dir"]) == sorted(str(i) for i in range(12))
    assert_png(out / "accuracy_vs_sparsity.png")
    assert_png(out / "verdicts.png")
    assert not (out / "pareto.png").exists()
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporary file
    stdout = capsys.readouterr().out
    for name in (
        "pruning_comparison.csv",
        "verdicts.csv",
        "accuracy_vs_sparsity.png",
        "verdicts.png",
        "PRUNING_REPORT.md",
    ):
        assert str(out / name) in stdout
    md = (out / "PRUNING_REPORT.md").read_text()
    assert "](accuracy_vs_sparsity.png)" in md and "](verdicts.png)" in md
    # the fake orders train equal epochs from equal weights, but prune_then_distill in one stage
    budgets = section(md, "Budgets")
    assert "the orders had equal budgets" not in budgets
    assert "`prune_then_distill` 1, `distill_then_prune` and `joint` 2" in budgets


def test_best_per_level_is_selected_on_val_and_reports_test(multirun: Path, capsys) -> None:
    # Deliberately changed: there is no "best per order" over all compressions any more (it picks
    # the least compressed by construction); the best is chosen within each compression level.
    assert commands.main(["report", str(multirun)]) == 0
    md = (multirun / "PRUNING_REPORT.md").read_text()
    assert "Best configuration per order" not in md
    best = section(md, "Best configuration per compression level")
    assert "selected by validation accuracy among configurations of equal achieved" in best.lower()
    # target 0.6: prune_then_distill has the higher val (0.86 vs 0.61), distill_then_prune the
    # higher test (0.94 vs 0.89)
    cells = table_row(best, "target 0.6")
    assert cells[1] == "`prune_then_distill, kd=hinton`" and cells[2] == "3"
    assert cells[3] == "0.8600 ± 0.0141" and cells[4] == "0.8900 ± 0.0141"
    assert table_row(best, "target 0.3")[1] == "`prune_then_distill, kd=hinton`"
    summary = capsys.readouterr().out
    assert re.search(
        r"target 0\.6: prune_then_distill, kd=hinton: val 0\.8600 ± 0\.0141, test 0\.8900", summary
    )


def test_main_table_has_mean_and_std_over_seeds(multirun: Path) -> None:
    assert commands.main(["report", str(multirun)]) == 0
    results = section((multirun / "PRUNING_REPORT.md").read_text(), "Results")
    rows = [ln for ln in results.splitlines() if ln.startswith("| joint |")]
    assert len(rows) == 2
    cells = [c.strip() for c in rows[1].strip("|").split("|")]  # joint, ratio 0.6
    assert cells[3:6] == ["0.6", "2", "0.4600 ± 0.0141"]
    # t interval over 2 seeds: 0.46 ± t(0.975, 1) * 0.0141 / sqrt(2) = 0.46 ± 12.706 * 0.01
    assert cells[6] == "[0.3329, 0.5871]"
    assert cells[7] == "0.6400 ± 0.0141"
    assert cells[8] == "84.0 ± 0.0 %"  # weight sparsity, as achieved


def test_one_seed_reports_no_spread(tmp_path: Path) -> None:
    for job, ratio in enumerate((0.3, 0.6)):
        write_metrics(tmp_path / str(job), fake_metrics("joint", ratio, 0, 0.5 + ratio, 0.5))
    assert commands.main(["report", str(tmp_path)]) == 0
    md = (tmp_path / "PRUNING_REPORT.md").read_text()
    assert "±" not in section(md, "Results")
    assert table_row(section(md, "Results"), "joint")[6] == "n/a"  # no interval from one seed
    # Two targets are two compression levels with one configuration each: nothing to choose
    # among at equal compression (deliberately changed from "best per order"); the front shows
    # the trade-off.
    best = section(md, "Best configuration per compression level")
    assert "No level holds two configurations" in best
    assert table_row(section(md, "Pareto front"), "`joint, kd=hinton`")[1] == "0.6"


def test_report_with_macs_speedup_axis_and_pareto(multirun: Path) -> None:
    assert commands.main(["report", str(multirun), "--x", "macs_speedup", "--pareto"]) == 0
    assert_png(multirun / "accuracy_vs_macs_speedup.png")
    assert_png(multirun / "pareto.png")
    assert "](pareto.png)" in (multirun / "PRUNING_REPORT.md").read_text()
    assert commands.main(["report", str(multirun), "--x", "params_removed"]) == 0
    assert_png(multirun / "accuracy_vs_params_removed.png")


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "{empty}"],
        ["report", "{empty}/missing"],
        ["report", "{empty}", "--x", "latency"],
        ["report", "{empty}", "--x", "nonsense"],
        ["report", "{empty}", "--margin", "-0.25"],
        ["report", "{empty}", "--margin", "nan"],
        ["report", "{empty}", "--correction", "bonferroni"],
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
