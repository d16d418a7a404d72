"""The report's judgement: configurations by fingerprint, paired verdicts with t intervals,
honest budgets and selection. Ledgers are built from metrics dicts in memory (no training)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers.fake_runs import fake_metrics, legacy, write_run

from kdprune import commands
from kdprune.reporting import classify, ledger_row, paired_test, summarise, verdicts
from kdprune.reporting.budgets import check_budgets
from kdprune.reporting.config_groups import distinguishing_keys, labels
from kdprune.reporting.plots import accuracy_points
from kdprune.reporting.runs import ledger_frame

T_975_2 = 4.302652729911275  # t quantile, 97.5%, 2 degrees of freedom (tables)


def ledger(metrics: list[dict[str, Any]]) -> pd.DataFrame:
    return ledger_frame([ledger_row(m, f"/runs/{i}") for i, m in enumerate(metrics)])


def report(tmp_path: Path, metrics: list[dict[str, Any]]) -> str:
    """Write the runs, report on them, return PRUNING_REPORT.md."""
    for i, m in enumerate(metrics):
        write_run(tmp_path / "runs" / str(i), m)
    assert commands.main(["report", str(tmp_path / "runs")]) == 0
    return (tmp_path / "runs" / "PRUNING_REPORT.md").read_text()


def test_paired_t_interval_matches_a_hand_computation() -> None:
    paired = paired_test([0.01, 0.03, 0.02, math.nan], 0.0025)  # a NaN seed is not counted
    assert paired.n == 3
    assert paired.mean == pytest.approx(0.02) and paired.se * math.sqrt(3) == pytest.approx(0.01)
    half = T_975_2 * 0.01 / math.sqrt(3)  # 0.024841
    assert paired.low == pytest.approx(0.02 - half) and paired.high == pytest.approx(0.02 + half)
    said = classify(paired.n, paired.mean, paired.p_diff, paired.p_equiv, 0.0025)
    assert said == "undecided at n = 3"


def test_one_seed_pair_has_no_interval() -> None:
    paired = paired_test([0.1], 0.0025)
    assert paired.n == 1 and paired.mean == pytest.approx(0.1) and math.isnan(paired.low)
    assert classify(paired.n, paired.mean, paired.p_diff, paired.p_equiv, 0.0025) == (
        "n = 1: no interval"
    )


def test_verdicts_pair_orders_and_kd_by_seed() -> None:
    # prune_then_distill beats joint by 0.05, 0.06, 0.07 on seeds 0-2; kd=none only has seed 0
    runs = ledger(
        [fake_metrics("prune_then_distill", 0.5, s, 0.9, 0.80 + 0.01 * s) for s in range(3)]
        + [fake_metrics("joint", 0.5, s, 0.9, 0.75 - 0.00 * s) for s in range(3)]
        + [fake_metrics("joint", 0.5, 0, 0.9, 0.70, kd="none")]
    )
    table = verdicts(runs, summarise(runs)).set_index(["a", "b"])
    orders = table.loc[("prune_then_distill, kd=hinton", "joint, kd=hinton")]
    assert orders["kind"] == "orders" and orders["n"] == 3 and orders["seeds"] == "0, 1, 2"
    assert orders["mean_diff"] == pytest.approx(0.06)
    half = T_975_2 * 0.01 / math.sqrt(3)
    assert orders["paired_low"] == pytest.approx(0.06 - half)
    assert orders["verdict"] == "A better" and orders["analysis"] == "blocked"
    assert orders["verdict_text"] == "prune_then_distill, kd=hinton better"
    assert orders["matched"] and orders["interval"] == "blocked OLS (arm + seed), 95%"
    kd = table.loc[("joint, kd=hinton", "joint, kd=none")]
    assert kd["kind"] == "kd" and kd["n"] == 1 and kd["verdict"] == "n = 1: no interval"
    assert len(table) == 2  # prune_then_distill without KD is not in the sweep


def test_duplicate_seed_counts_once_and_only_shared_seeds_pair(tmp_path) -> None:
    metrics = (
        [fake_metrics("prune_then_distill", 0.5, s, 0.9, 0.80) for s in (0, 1, 2)]
        + [fake_metrics("prune_then_distill", 0.5, 0, 0.9, 0.84)]  # seed 0 again
        + [fake_metrics("distill_then_prune", 0.5, s, 0.9, 0.78) for s in (0, 1, 3)]
    )
    runs = ledger(metrics)
    summary = summarise(runs).set_index("order")
    assert summary.at["prune_then_distill", "n_seeds"] == 3  # distinct seeds, not 4 rows
    assert summary.at["prune_then_distill", "n_runs"] == 4
    (row,) = verdicts(runs, summarise(runs)).itertuples()
    assert row.n == 2 and row.seeds == "0, 1"  # seeds 2 and 3 are on one side only
    assert row.mean_diff == pytest.approx((0.04 + 0.02) / 2)  # seed 0: mean of 0.80 and 0.84
    assert "**duplicates**: `prune_then_distill, kd=hinton` (target 0.5) seed 0: 2 runs" in report(
        tmp_path, metrics
    )


def test_configurations_differing_only_in_temperature_are_never_pooled(tmp_path) -> None:
    metrics = [
        fake_metrics("joint", 0.5, s, 0.9, 0.8, temperature=t) for t in (2.0, 4.0) for s in (0, 1)
    ]
    summary = summarise(ledger(metrics))
    assert len(summary) == 2 and summary["n_seeds"].tolist() == [2, 2]
    md = report(tmp_path, metrics)
    results = md.split("## Results", 1)[1].split("\n## ", 1)[0]
    assert "| differs in |" in results
    assert "kd.temperature=2" in results and "kd.temperature=4" in results


def test_unstructured_run_sits_at_its_weight_sparsity() -> None:
    masked = fake_metrics("joint", 0.5, 0, 0.9, 0.8, kind="masked", method="l1_unstructured")
    masked.update(params_after=10_000, params_removed_fraction=0.0, weight_sparsity=0.5)
    masked.update(nonzero_fraction=0.5, macs_speedup=1.0)
    points = accuracy_points(summarise(ledger([masked])), "weight_sparsity")
    assert points["x"].tolist() == [pytest.approx(0.5)]
    # a run from before `weight_sparsity`: estimated from its non-zero fraction
    (estimated,) = ledger([legacy(masked)])["weight_sparsity"]
    assert estimated == pytest.approx(0.5)


def _teacher_start(seed: int) -> dict[str, Any]:
    return {
        "start": {"init": "teacher", "weights": f"teacher-{seed}.pt", "inherited_epochs": 6},
        "epochs": {"inherited": 6, "student": 2, "total": 8},
    }


def test_budgets_equal_only_when_starts_epochs_and_cycles_match(tmp_path) -> None:
    fair = [
        fake_metrics(o, 0.5, s, 0.9, 0.8) for o in ("distill_then_prune", "joint") for s in (0, 1)
    ]
    md = report(tmp_path / "fair", fair)
    assert "the orders had equal budgets in everything recorded" in md
    assert "2 per run" in md and "not recorded by 4 run(s)" in md  # histories without them
    # prune_then_distill trains its epochs in one stage (one learning-rate cycle), joint in two
    one_cycle = [
        fake_metrics(o, 0.5, s, 0.9, 0.8) for o in ("prune_then_distill", "joint") for s in (0, 1)
    ]
    md = report(tmp_path / "cycles", one_cycle)
    assert "the orders had equal budgets" not in md
    assert (
        "learning-rate cycles (a fresh optimizer and schedule per stage): "
        "`prune_then_distill` 1, `joint` 2" in md
    )
    head_start = [
        fake_metrics("prune_then_distill", 0.5, s, 0.9, 0.8, **_teacher_start(s)) for s in (0, 1)
    ] + [fake_metrics(o, 0.5, s, 0.9, 0.8) for o in ("distill_then_prune", "joint") for s in (0, 1)]
    md = report(tmp_path / "unfair", head_start)
    assert "the orders had equal budgets" not in md
    assert (
        "`prune_then_distill` started from the teacher's weights (6 inherited epochs), "
        "`distill_then_prune` and `joint` from scratch" in md
    )
    md = report(tmp_path / "legacy", [legacy(m) for m in fair])
    assert "the orders had equal budgets" not in md and "cannot be confirmed" in md


def test_budgets_name_differing_epochs_and_weights() -> None:
    other_epochs = {"epochs": {"inherited": None, "student": 5, "total": 5}}
    other_weights = {"start": {"init": "scratch", "weights": "other", "inherited_epochs": None}}
    runs = ledger(
        [fake_metrics("prune_then_distill", 0.5, 0, 0.9, 0.8, **other_epochs)]
        + [fake_metrics("joint", 0.5, 0, 0.9, 0.8, **other_weights)]
        + [fake_metrics("distill_then_prune", 0.5, 0, 0.9, 0.8)]
    )
    check = check_budgets(runs, summarise(runs))
    (said,) = check.differences.values()
    assert not check.equal
    assert (
        "epochs on the student: `prune_then_distill` 5, `distill_then_prune` and `joint` 2" in said
    )
    assert "seed 0: the runs started the same way but from different weights" in said


def test_budgets_name_a_different_epoch_selection() -> None:
    runs = ledger(
        [fake_metrics("distill_then_prune", 0.5, 0, 0.9, 0.8, select_epoch="best_val")]
        + [fake_metrics("joint", 0.5, 0, 0.9, 0.8)]
    )
    (said,) = check_budgets(runs, summarise(runs)).differences.values()
    assert said == ["epoch selection (`select_epoch`): `distill_then_prune` best_val, `joint` last"]


def _schedule(metrics: dict, resets: int, selectable: bool) -> dict:
    """The run's history as kdprune now records it: optimizer resets and epoch selection."""
    history = [dict(h) for h in metrics["history"]]
    for h in history:
        if h["stage"] != "teacher":
            h.update(optimizer_resets=0, selectable=selectable)
    next(h for h in history if h["stage"] != "teacher")["optimizer_resets"] = resets
    return {**metrics, "history": history}


def test_budgets_name_optimizer_resets_and_stages_that_could_select() -> None:
    runs = ledger(
        [_schedule(fake_metrics("joint", 0.5, 0, 0.9, 0.8), 7, False)]
        + [_schedule(fake_metrics("distill_then_prune", 0.5, 0, 0.9, 0.8), 0, True)]
    )
    by_order = runs.set_index("order")
    assert by_order["optimizer_resets"].to_dict() == {"joint": 7, "distill_then_prune": 0}
    assert by_order["selecting_stages"].to_dict() == {"joint": 0, "distill_then_prune": 2}
    check = check_budgets(runs, summarise(runs))
    (said,) = check.differences.values()
    assert said == [
        "optimizers rebuilt inside a stage (after a pruning step): "
        "`distill_then_prune` 0, `joint` 7",
        "stages that could keep their best validation epoch: `distill_then_prune` 2, `joint` 0",
    ]
    assert not check.equal and check.unrecorded_schedule == 0


def test_equal_budgets_with_everything_recorded_name_no_unrecorded_fact(tmp_path) -> None:
    fair = [
        _schedule(fake_metrics(o, 0.5, s, 0.9, 0.8), 0, False)
        for o in ("distill_then_prune", "joint")
        for s in (0, 1)
    ]
    md = report(tmp_path / "fair", fair)
    assert "the orders had equal budgets in everything recorded" in md
    assert "same optimizer resets inside stages (0)" in md and "Not judged" not in md


def test_unmatched_compression_is_flagged_and_never_a_selection_level(tmp_path) -> None:
    metrics = [
        fake_metrics("distill_then_prune", 0.5, s, 0.80, 0.80 + 0.01 * s, speedup=2.0)
        for s in (0, 1)
    ] + [fake_metrics("joint", 0.5, s, 0.95, 0.78, speedup=2.9) for s in (0, 1)]
    runs = ledger(metrics)
    (row,) = verdicts(runs, summarise(runs)).itertuples()
    assert not row.matched and row.macs_gap == pytest.approx(0.45)
    md = report(tmp_path, metrics)
    assert "**no** (MACs 45.0% apart)" in md
    # joint's higher val_acc at 2.9x does not make it the best at distill_then_prune's 2.0x
    best = md.split("## Best configuration per compression level", 1)[1].split("\n## ", 1)[0]
    assert "No level holds two configurations" in best


def test_best_val_epochs_make_the_selected_val_accuracy_optimistic(tmp_path) -> None:
    metrics = [
        fake_metrics(o, 0.5, 0, 0.9, 0.8, select_epoch="best_val")
        for o in ("joint", "distill_then_prune")
    ]
    md = report(tmp_path, metrics)
    assert "Validation was used twice" in md and "optimistic" in md


def test_verdicts_csv_and_markdown_section_per_level(tmp_path) -> None:
    metrics = [
        fake_metrics(o, r, s, 0.9, 0.8 + (0.02 if o == "joint" else 0) + 0.001 * s, kd=kd)
        for o in ("distill_then_prune", "joint")
        for r in (0.3, 0.6)
        for kd in ("none", "hinton")
        for s in (0, 1, 2)
    ]
    md = report(tmp_path, metrics)
    table = pd.read_csv(tmp_path / "runs" / "verdicts.csv")
    assert len(table) == 2 * (2 + 2)  # per level: 2 order pairs (one per KD), 2 KD vs none
    assert set(table["kind"]) == {"orders", "kd"} and (table["n"] == 3).all()
    joint_wins = table[table["kind"] == "orders"]
    assert (joint_wins["verdict"] == "B better").all()
    assert joint_wins["mean_diff"].tolist() == pytest.approx([-0.02] * 4)
    assert "### target 0.3" in md and "### target 0.6" in md
    assert "**joint, kd=hinton better**" in md and "paired t" in md
    assert (tmp_path / "runs" / "verdicts.png").stat().st_size > 10_000


def test_labels_name_what_differs_once() -> None:
    def kd(name: str, t: float | None = None) -> dict[str, Any]:
        group = {"name": name, "objective": {"_target_": f"kdprune.{name}"}}
        if t is not None:  # the objective holds an interpolated copy of the temperature
            group.update(temperature=t, objective={**group["objective"], "temperature": t})
        return {"kd": group, "schedule": {"name": "joint"}, "seed": 0}

    configs = {"a": kd("none"), "b": kd("hinton", 2.0), "c": kd("hinton", 4.0)}
    # kd.temperature only differs among the hinton runs; its copy and _target_ are not news
    assert distinguishing_keys(configs.values()) == ["kd.name", "kd.temperature"]
    assert labels(configs, always=("schedule.name",)) == {
        "a": "joint, kd=none",
        "b": "joint, kd=hinton, kd.temperature=2",
        "c": "joint, kd=hinton, kd.temperature=4",
    }


def test_a_teacher_of_the_students_own_architecture_is_named_not_none() -> None:
    same = {"schedule": {"name": "joint"}, "teacher": {"model": None}}
    larger = {"schedule": {"name": "joint"}, "teacher": {"model": {"name": "cnn5", "width": 64}}}
    assert labels({"a": same, "b": larger}, always=("schedule.name",)) == {
        "a": "joint, teacher.model=the student's",
        "b": "joint, teacher.model=cnn5",
    }


def test_a_cut_without_a_ratio_file_is_called_uniform() -> None:
    uniform = {"prune_method": {"name": "l1", "layer_ratios": None}}
    guided = {"prune_method": {"name": "l1", "layer_ratios": "/runs/sens/layer_ratios.yaml"}}
    assert labels({"a": uniform, "b": guided}) == {
        "a": "prune_method.layer_ratios=uniform",
        "b": "prune_method.layer_ratios=/runs/sens/layer_ratios.yaml",
    }
