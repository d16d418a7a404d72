"""Identity before pairing: what a run does not use is no part of its identity, the teacher
file of each side is checked per seed, the device is the resolved one, a NaN seed is not
counted, and masked pairs are matched on their weights. Ledgers from metrics dicts in memory."""

from __future__ import annotations

import copy
import math
from typing import Any

import pandas as pd
import pytest
from helpers.fake_runs import fake_metrics

from kdprune.reporting import ledger_row, summarise, verdicts
from kdprune.reporting.runs import ledger_frame

ORDERS = ("prune_then_distill", "joint")
CNN5 = {"name": "cnn5", "width": 64}


def ledger(metrics: list[dict[str, Any]]) -> pd.DataFrame:
    return ledger_frame([ledger_row(m, f"/runs/{i}") for i, m in enumerate(metrics)])


def run(order: str, seed: int, test: float, kd: str = "hinton", teacher: Any = None, **extra):
    """A run with teacher architecture `teacher` (None: the student's) and its teacher file."""
    metrics = fake_metrics(order, 0.5, seed, 0.9, test, kd=kd, **extra)
    metrics["config"]["teacher"]["model"] = copy.deepcopy(teacher)
    name = "cnn5" if teacher else "lenet5"
    metrics.setdefault("teacher_weights", f"cache {name}-digits-seed{seed}.pt")
    return metrics


def two_teacher_arms() -> list[dict[str, Any]]:
    """Both orders with KD from each teacher, and without KD under each teacher arm."""
    out = []
    for teacher in (None, CNN5):
        for order in ORDERS:
            for seed in range(3):
                out.append(run(order, seed, 0.80 + 0.01 * seed, teacher=teacher))
                out.append(run(order, seed, 0.78 + 0.01 * seed, kd="none", teacher=teacher))
    return out


def test_the_kd_none_runs_of_two_teacher_arms_are_one_configuration() -> None:
    runs = ledger(two_teacher_arms())
    summary = summarise(runs)
    none = summary[summary["kd"] == "none"]
    assert len(none) == 2  # one per order, not one per order and teacher
    assert (none["n_runs"] == 6).all() and (none["n_seeds"] == 3).all()  # duplicates, seen
    table = verdicts(runs, summary)
    assert table["pairing_key"].nunique() == 1  # one level: orders × KD × teacher
    kinds = table["kind"].value_counts().to_dict()
    # orders: KD with each teacher and without KD (once); KD vs none per order and teacher;
    # the two teachers per order
    assert kinds == {"orders": 3, "kd": 4, "teacher": 2}
    none_orders = table[(table["kind"] == "orders") & table["a"].str.contains("kd=none")]
    assert len(none_orders) == 1


def test_a_pair_with_different_teacher_files_is_refused() -> None:
    metrics = [
        run(o, s, 0.80 + 0.01 * s + 0.01 * (o == "joint")) for o in ORDERS for s in (0, 1, 2)
    ]
    metrics[4]["teacher_weights"] = "cache lenet5-digits-retrained.pt"  # joint, seed 1
    table = verdicts(ledger(metrics), summarise(ledger(metrics)))
    (row,) = table.itertuples()
    assert row.verdict == "refused: different teacher files at seed 1"
    assert math.isnan(row.p_raw) and math.isnan(row.p_adjusted)


def test_the_teacher_files_hash_decides_over_its_name() -> None:
    metrics = [
        run(o, s, 0.80 + 0.01 * s + 0.01 * (o == "joint"), teacher_sha256="a" * 64)
        for o in ORDERS
        for s in (0, 1, 2)
    ]
    same = verdicts(ledger(metrics), summarise(ledger(metrics)))
    assert not same["verdict"].str.startswith("refused").any()
    metrics[1]["teacher_sha256"] = "b" * 64  # prune_then_distill, seed 1: same name, other bytes
    (row,) = verdicts(ledger(metrics), summarise(ledger(metrics))).itertuples()
    assert row.verdict == "refused: different teacher files at seed 1"


def test_kd_vs_none_is_not_refused_for_the_teacher_none_does_not_use() -> None:
    metrics = [run("joint", s, 0.82 + 0.001 * s) for s in (0, 1, 2)]
    metrics += [run("joint", s, 0.80, kd="none", teacher_weights="another.pt") for s in (0, 1, 2)]
    (row,) = verdicts(ledger(metrics), summarise(ledger(metrics))).itertuples()
    assert row.kind == "kd" and row.verdict == "A better" and row.note == ""


def test_cpu_and_cuda_runs_are_not_pooled() -> None:
    metrics = [run("joint", s, 0.8, device=d) for d in ("cpu", "cuda:0") for s in (0, 1)]
    for m in metrics:
        m["config"]["device"] = "auto"  # as configured: resolved in metrics.json `device`
    summary = summarise(ledger(metrics))
    assert len(summary) == 2 and summary["n_seeds"].tolist() == [2, 2]


def test_a_nan_seed_is_dropped_from_n() -> None:
    metrics = [run(o, s, 0.80 + 0.01 * s + 0.01 * (o == "joint")) for o in ORDERS for s in range(4)]
    metrics[-1]["test_acc"] = math.nan  # joint, seed 3 diverged
    (row,) = verdicts(ledger(metrics), summarise(ledger(metrics))).itertuples()
    assert row.n == 3 and row.seeds == "0, 1, 2"


def test_masked_pairs_are_matched_on_weights_not_on_their_equal_macs() -> None:
    def masked(order: str, seed: int, sparsity: float) -> dict[str, Any]:
        m = run(order, seed, 0.8 + 0.01 * seed, kind="masked", method="l1_unstructured")
        m.update(macs_speedup=1.0, weight_sparsity=sparsity, params_after=10_000)
        return m

    metrics = [masked("prune_then_distill", s, 0.5) for s in (0, 1)]
    metrics += [masked("joint", s, 0.7) for s in (0, 1)]
    (row,) = verdicts(ledger(metrics), summarise(ledger(metrics))).itertuples()
    assert row.macs_gap == pytest.approx(0.0) and row.weights_gap == pytest.approx(0.5 / 0.3 - 1)
    assert row.matched is not None and not row.matched
