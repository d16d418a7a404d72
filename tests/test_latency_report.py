"""The report's measured speed-up: a column beside the MACs speed-up, and `--x latency_speedup`,
refused in one line where runs lack a measured speed-up or mix latency targets. Ledgers are
fake metrics.json files (no training, no timing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers.fake_runs import fake_metrics

from kdprune import commands
from kdprune.results import write_metrics

TARGET = {
    "latency_runtime": "onnxruntime",
    "latency_batch_size": 64,
    "latency_threads": 1,
    "cpu_model": "Test CPU",
    "cpu_isa": "avx512f",
}


def _runs(root: Path, measured: bool = True, **target: Any) -> Path:
    """2 orders x 2 ratios x 2 seeds; with `measured`, a latency speed-up of 1 / (1 - ratio)
    minus 0.02 per seed, on TARGET (then `target` for the last run)."""
    job = 0
    for order in ("prune_then_distill", "joint"):
        for ratio in (0.3, 0.5):
            for seed in (0, 1):
                latency = {**TARGET, "latency_speedup": 1 / (1 - ratio) - 0.02 * seed}
                if job == 7:
                    latency |= target
                extra = latency if measured else {}
                metrics = fake_metrics(order, ratio, seed, 0.8 - ratio / 4, 0.8 - ratio / 5)
                write_metrics(root / str(job), metrics | extra)
                job += 1
    return root


def test_the_ledger_and_report_show_both_speedups(tmp_path: Path) -> None:
    root = _runs(tmp_path / "runs")
    assert commands.main(["report", str(root), "--x", "latency_speedup"]) == 0
    assert (root / "accuracy_vs_latency_speedup.png").stat().st_size > 10_000
    csv = pd.read_csv(root / "pruning_comparison.csv")
    assert {"macs_speedup", "latency_speedup", "latency_runtime"} <= set(csv.columns)
    md = (root / "PRUNING_REPORT.md").read_text()
    results = md.split("## Results", 1)[1].split("\n## ", 1)[0]
    assert "| MACs speed-up |" in results and "measured speed-up (latency target)" in results
    rows = [line for line in results.splitlines() if line.startswith("| prune_then_distill")]
    row = next(line for line in rows if "| 0.5 |" in line)
    # A target of 0.5 removes half the latency: 2.00 and 1.98 over the two seeds.
    assert row.endswith("| 1.99 ± 0.01× (onnxruntime, batch 64, 1 thread(s)) |")
    assert "](accuracy_vs_latency_speedup.png)" in md


def test_a_report_without_measured_speedups_has_no_such_column(tmp_path: Path) -> None:
    root = _runs(tmp_path / "runs", measured=False)
    assert commands.main(["report", str(root)]) == 0
    assert "measured speed-up" not in (root / "PRUNING_REPORT.md").read_text()


@pytest.mark.parametrize(
    ("measured", "target", "says"),
    [
        (False, {}, "8 of 8 lack one"),
        (True, {"latency_speedup": float("nan")}, "1 of 8 lack one"),
        (True, {"latency_runtime": "eager"}, "mix 2"),
        (True, {"cpu_model": "Other CPU"}, "mix 2"),
    ],
    ids=["none-measured", "one-missing", "two-runtimes", "two-cpus"],
)
def test_the_latency_axis_is_refused_in_one_line(
    tmp_path: Path, capsys, measured: bool, target: dict[str, Any], says: str
) -> None:
    root = _runs(tmp_path / "runs", measured, **target)
    assert commands.main(["report", str(root), "--x", "latency_speedup"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdprune: error: --x latency_speedup") and err.count("\n") == 1
    assert says in err
    assert not (root / "PRUNING_REPORT.md").exists()
