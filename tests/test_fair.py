"""A fair comparison, run side: one start for every order, joint at one-shot's widths, achieved
sparsity on the axis, a teacher (and its logits) tied to exactly the data and file it came from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdprune.app import run
from kdprune.errors import ConfigError
from kdprune.pruning import load_model
from kdprune.pruning.graph import scheduled_widths
from kdprune.pruning.structured import layer_widths
from kdprune.schedules.names import ORDER_NAMES
from kdprune.schedules.orders import resolve_prune_target

WHOLE_EPOCHS = ["teacher.epochs=2", "budget.student_epochs=2", "budget.finetune_epochs=1"]
FAST = [*WHOLE_EPOCHS, "trainer.max_batches=3"]
ORDERS = ORDER_NAMES  # the natural sequence: prune_then_distill, distill_then_prune, joint


def _widths(metrics: dict) -> dict[str, int]:
    return layer_widths(load_model(metrics["model_file"]))


@pytest.mark.parametrize(("unit", "ratio"), [("channels", 0.5), ("macs", 0.5), ("params", 0.6)])
def test_joint_ends_at_the_one_shot_widths(make_cfg, tmp_path: Path, unit, ratio) -> None:
    cut = [f"prune_method.unit={unit}", f"prune_method.ratio={ratio}", "student_init=teacher"]
    one_shot = run(make_cfg(*FAST, *cut, "schedule=distill_then_prune"), tmp_path / "dtp")
    joint = run(make_cfg(*FAST, *cut, "schedule=joint", "schedule.pruning_steps=4"), tmp_path / "j")
    assert _widths(joint) == _widths(one_shot)
    assert joint["macs_after"] == one_shot["macs_after"]


def test_joint_keeps_the_per_layer_cap_at_a_deep_cut(make_cfg, tmp_path: Path) -> None:
    cut = ["prune_method.ratio=0.85", "prune_method.max_layer_ratio=0.9", "student_init=teacher"]
    joint = run(make_cfg(*FAST, *cut, "schedule=joint"), tmp_path / "j")
    dense = layer_widths(load_model(Path(joint["model_file"]).with_name("dense.pt")))
    for path, width in _widths(joint).items():
        if path != "fc3":  # the classifier is never pruned
            assert width >= round(dense[path] * 0.1) >= 1, (path, width, dense[path])


def test_scheduled_widths_move_from_dense_to_final() -> None:
    dense, final = {"a": 16, "b": 32}, {"a": 8, "b": 4}
    assert scheduled_widths(dense, final, 0.0) == dense
    assert scheduled_widths(dense, final, 0.5) == {"a": 12, "b": 18}
    assert scheduled_widths(dense, final, 1.0) == final


def test_every_order_records_the_same_start_and_epochs(make_cfg, tmp_path: Path) -> None:
    runs = [
        run(make_cfg(*FAST, f"schedule={order}", "student_init=teacher"), tmp_path / order)
        for order in ORDERS
    ]
    assert len({r["start"]["weights"] for r in runs}) == 1
    assert {r["start"]["inherited_epochs"] for r in runs} == {2}  # the teacher's
    assert {(r["epochs"]["student"], r["epochs"]["total"]) for r in runs} == {(2, 4)}
    assert runs[0]["start"]["weights"].startswith("cache lenet5-digits-")
    # the teacher file's own hash, and per epoch the optimizer rebuilds and whether it selects
    cached = tmp_path / "cache" / "teachers" / runs[0]["teacher_weights"].removeprefix("cache ")
    assert {r["teacher_sha256"] for r in runs} == {_sha(cached)}
    resets = {r["order"]: sum(h["optimizer_resets"] for h in r["history"]) for r in runs}
    assert resets["joint"] > 0 and resets["prune_then_distill"] == resets["distill_then_prune"] == 0
    joint = [h["selectable"] for h in runs[2]["history"] if h["stage"] == "joint"]
    assert joint and not any(joint)  # its architecture changes while it trains
    scratch = run(make_cfg(*FAST, "student_init=scratch"), tmp_path / "scratch")
    assert scratch["start"]["inherited_epochs"] == 0 and scratch["epochs"]["total"] == 2


def test_prune_then_distill_with_another_teacher_prunes_the_teacher_or_refuses(
    make_cfg, tmp_path: Path
) -> None:
    other = ["teacher=cnn5", "schedule=prune_then_distill", *FAST]
    metrics = run(make_cfg(*other), tmp_path / "auto")  # a fresh student: the teacher is pruned
    assert metrics["prune_target"] == "teacher" and metrics["pruned_teacher_history_len"] > 0
    with pytest.raises(ConfigError, match="untrained"):
        run(make_cfg(*other, "schedule.prune_target=student"), tmp_path / "refused")
    assert not (tmp_path / "refused" / "metrics.json").exists()
    assert (
        resolve_prune_target("auto", "scratch", same_arch=True, prune_untrained=True) == "student"
    )
    assert resolve_prune_target("auto", "trained", same_arch=False) == "student"


def test_trained_start_with_another_teacher_is_the_students_own_dense_network(
    make_cfg, tmp_path: Path
) -> None:
    metrics = run(make_cfg("teacher=cnn5", "student_init=trained", *FAST), tmp_path / "run")
    assert metrics["start"]["weights"].startswith("cache lenet5-digits-")
    assert metrics["teacher_weights"].startswith("cache cnn5-digits-")
    assert metrics["teacher_model"] == "cnn5" and metrics["teacher_macs"] > metrics["macs_before"]


def test_unstructured_half_sits_at_half_the_weights(make_cfg, tmp_path: Path) -> None:
    cut = ["prune_method=l1_unstructured", "prune_method.ratio=0.5", *FAST]
    metrics = run(make_cfg(*cut), tmp_path / "run")
    assert metrics["params_removed_fraction"] == 0  # shapes stay: the old axis said "nothing"
    model = load_model(metrics["model_file"])
    weights = [m.weight.numel() for m in model.modules() if hasattr(m, "weight")]
    classifier = model.fc3.weight.numel()  # left dense, as always
    expected = 0.5 * (sum(weights) - classifier) / sum(weights)
    assert metrics["weight_sparsity"] == pytest.approx(expected, abs=0.002)
    assert metrics["weight_sparsity"] == pytest.approx(0.5, abs=0.025)


def test_last_epoch_selection_keeps_the_last_epoch(make_cfg, tmp_path: Path) -> None:
    metrics = run(make_cfg(*FAST, "trainer.select_epoch=last", "kd=none"), tmp_path / "run")
    assert metrics["select_epoch"] == "last"
    assert metrics["val_acc"] == metrics["history"][-1]["val_acc"]


def test_a_changed_image_folder_trains_a_new_teacher(make_cfg, tmp_path: Path) -> None:
    from test_report import _image_folder

    folder = _image_folder(tmp_path / "images")
    data = ["dataset=imagefolder", "dataset.num_classes=2", "dataset.image_size=16",
            f"dataset.splits.root={folder}", *FAST]  # fmt: skip
    first = run(make_cfg(*data), tmp_path / "a")
    again = run(make_cfg(*data), tmp_path / "b")
    (folder / "train" / "0" / "0.png").unlink()  # the same root, other files
    changed = run(make_cfg(*data), tmp_path / "c")
    assert [m["teacher_source"] for m in (first, again, changed)] == ["trained", "cache", "trained"]
    assert changed["data_identity"] != first["data_identity"]


def test_a_retrained_teacher_never_reuses_old_logits(make_cfg, tmp_path: Path) -> None:
    # Whole epochs: after a few batches both students can score the same, teacher changed or not.
    first = run(make_cfg(*WHOLE_EPOCHS), tmp_path / "a")
    (cached,) = (tmp_path / "cache" / "teachers").glob("*-????????????????.pt")
    logits = cached.with_suffix(".logits.pt")
    assert torch.load(logits, weights_only=True)["teacher_sha256"]
    state = torch.load(cached, weights_only=True)
    state["state_dict"] = {k: v + 0.01 for k, v in state["state_dict"].items()}  # retrained
    torch.save(state, cached)
    second = run(make_cfg(*WHOLE_EPOCHS), tmp_path / "b")
    assert second["teacher_source"] == "cache" and second["test_acc"] != first["test_acc"]
    fresh = torch.load(logits, weights_only=True)
    assert fresh["teacher_sha256"] != "" and fresh["teacher_sha256"] == _sha(cached)


def _sha(path: Path) -> str:
    from kdprune.schedules.teacher_stage import file_sha256

    return file_sha256(path)
