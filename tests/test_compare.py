"""`kdprune report --compare prune_method`: methods paired by seed at the same target.

Ledgers come from metrics dicts made in the test (no training): movement and magnitude at 50%
and 90%, in one order; each target is its own level, and only methods of the same target and
unit are compared.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers.fake_runs import fake_metrics

from kdprune import commands
from kdprune.reporting import ledger_row, summarise, verdicts
from kdprune.reporting.config_groups import paired_by
from kdprune.reporting.runs import ledger_frame
from kdprune.reporting.verdicts import unmatched
from kdprune.results import write_metrics

T_975_2 = 4.302652729911275  # t quantile, 97.5%, 2 degrees of freedom (tables)


def method_run(method: str, ratio: float, seed: int, test: float, unit: str = "params") -> dict:
    """A joint run of `method` at `ratio` (masked: MACs unchanged) with test accuracy `test`."""
    metrics = fake_metrics("joint", ratio, seed, 0.9, test, speedup=1.0, method=method, unit=unit)
    node = {"_target_": f"kdprune.pruning.{method}", "ratio": ratio, "unit": unit}
    group = {"name": method, "ratio": ratio, "unit": unit, "pruner": node}
    metrics["config"]["prune_method"] = group
    return metrics


def sweep() -> list[dict[str, Any]]:
    # movement beats magnitude by 0.02, 0.03, 0.04 at 90%; they tie (+-0.01) at 50%
    out = []
    for s in range(3):
        out += [method_run("l1_unstructured", 0.9, s, 0.70)]
        out += [method_run("movement", 0.9, s, 0.72 + 0.01 * s)]
        out += [method_run("l1_unstructured", 0.5, s, 0.85)]
        out += [method_run("movement", 0.5, s, 0.85 + (s - 1) * 0.01)]
    out.append(method_run("l1", 0.9, 0, 0.5, unit="channels"))  # another unit: not comparable
    return out


def ledger(metrics: list[dict[str, Any]]) -> pd.DataFrame:
    return ledger_frame([ledger_row(m, f"/runs/{i}") for i, m in enumerate(metrics)])


def test_methods_are_compared_at_each_target_and_unit() -> None:
    runs = paired_by(ledger(sweep()), "prune_method")
    table = verdicts(runs, summarise(runs), "prune_method")
    assert len(table) == 2 and set(table["kind"]) == {"prune_method"}
    high = table[table["target_ratio"] == 0.9].iloc[0]
    assert (high["a"], high["b"]) == ("prune_method=l1_unstructured", "prune_method=movement")
    assert high["n"] == 3 and high["mean_diff"] == pytest.approx(-0.03)
    half = T_975_2 * 0.01 / math.sqrt(3)
    assert high["ci_high"] == pytest.approx(-0.03 + half) and high["verdict"] == "B better"
    assert high["verdict_text"] == "prune_method=movement better"
    low = table[table["target_ratio"] == 0.5].iloc[0]
    assert low["mean_diff"] == pytest.approx(0.0) and low["verdict"] == "undecided at n = 3"


def test_the_default_report_does_not_pair_methods() -> None:
    runs = ledger(sweep())
    assert verdicts(runs, summarise(runs)).empty  # one order, one KD: nothing to compare


def test_report_compare_option_writes_method_verdicts(tmp_path: Path, capsys) -> None:
    for i, m in enumerate(sweep()):
        write_metrics(tmp_path / "runs" / str(i), m)
    assert commands.main(["report", str(tmp_path / "runs"), "--compare", "prune_method"]) == 0
    text = (tmp_path / "runs" / "PRUNING_REPORT.md").read_text()
    assert "everything the same but `prune_method`" in text
    assert "**prune_method=movement better**" in text
    csv = pd.read_csv(tmp_path / "runs" / "verdicts.csv")
    assert list(csv["kind"]) == ["prune_method", "prune_method"]
    assert commands.main(["report", str(tmp_path / "runs"), "--compare", "nothing"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("kdprune: error: --compare")


def latency_run(allocation: str, seed: int, test: float, measured: float, macs: float) -> dict:
    """A distill_then_prune run cut to a 2x latency target with `allocation`: its measured
    speed-up `measured`, its MACs speed-up `macs` (a latency cut's MACs depend on where it cuts)."""
    metrics = fake_metrics("distill_then_prune", 0.5, seed, 0.9, test, speedup=macs, unit="latency")
    metrics |= {"latency_speedup": measured, "latency_runtime": "onnxruntime",
                "latency_batch_size": 64, "latency_threads": 1,
                "cpu_model": "some CPU"}  # fmt: skip
    latency = {"runtime": "onnxruntime", "batch_size": 64, "threads": 1}
    group = {"name": "l1", "ratio": 0.5, "unit": "latency", "allocation": allocation,
             "latency": latency}  # fmt: skip
    metrics["config"]["prune_method"] = group
    return metrics


def test_latency_cuts_are_compared_at_matched_measured_latency_not_matched_macs() -> None:
    # The latency allocation keeps 0.01 more accuracy at 1.97x-2.03x measured; MACs 3x vs 6x.
    runs = [latency_run("uniform", s, 0.90, 1.97 + 0.01 * s, 6.0) for s in range(3)]
    runs += [latency_run("latency", s, 0.91 + 0.001 * s, 2.03 - 0.01 * s, 3.0) for s in range(3)]
    frame = paired_by(ledger(runs), "prune_method")
    summary = summarise(frame)
    assert summary["level"].nunique() == 1  # one level although the MACs differ twofold
    table = verdicts(frame, summary, "prune_method")
    assert len(table) == 1 and table.iloc[0]["n"] == 3 and table.iloc[0]["matched"]
    assert table.iloc[0]["macs_gap"] == pytest.approx(1.0)  # MACs apart, latency matched
    assert table.iloc[0]["latency_gap"] == pytest.approx(2.02 / 1.98 - 1)
    assert {table.iloc[0]["a"], table.iloc[0]["b"]} == {
        "prune_method=l1, prune_method.allocation=latency",
        "prune_method=l1, prune_method.allocation=uniform",
    }

    far = [latency_run("uniform", s, 0.90, 1.6, 6.0) for s in range(3)]  # 1.6x vs 2x: apart
    far += [latency_run("latency", s, 0.91, 2.0, 3.0) for s in range(3)]
    apart = paired_by(ledger(far), "prune_method")
    assert summarise(apart)["level"].nunique() == 2
    row = verdicts(apart, summarise(apart), "prune_method").iloc[0]
    assert not row["matched"] and row["latency_gap"] == pytest.approx(0.25)
    assert unmatched(row) == " [measured latency not matched]"

    other = [latency_run("uniform", s, 0.90, 2.0, 6.0) for s in range(3)]
    for metrics in other:  # another target: another pairing group
        metrics["config"]["prune_method"]["latency"]["batch_size"] = 1
    both = paired_by(ledger(other + runs[3:]), "prune_method")
    assert verdicts(both, summarise(both), "prune_method").empty
