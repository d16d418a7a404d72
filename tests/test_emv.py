"""The expected-maximum-validation curve (Dodge et al. 2019) and its place in a study's report."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import optuna
import pytest
from helpers.fake_runs import fake_metrics
from optuna.trial import TrialState, create_trial

from kdprune import commands
from kdprune.reporting.emv import EMV_FILE, expected_max_curve
from kdprune.results import write_metrics


def test_the_curve_matches_a_hand_computation() -> None:
    curve = expected_max_curve([0.9, 0.1, 0.5]).set_index("n")
    assert curve.loc[1, "expected"] == pytest.approx(0.5)  # n = 1: the mean
    # n = 2: weights (1/3)^2, (2/3)^2 - (1/3)^2, 1 - (2/3)^2 on the sorted values
    assert curve.loc[2, "expected"] == pytest.approx((0.1 * 1 + 0.5 * 3 + 0.9 * 5) / 9)
    second = (0.01 * 1 + 0.25 * 3 + 0.81 * 5) / 9
    assert curve.loc[2, "sd"] == pytest.approx(np.sqrt(second - curve.loc[2, "expected"] ** 2))
    assert curve.loc[1, "sd"] == pytest.approx(np.std([0.1, 0.5, 0.9]))


def test_the_curve_rises_towards_the_best_and_mirrors_for_minimising() -> None:
    values = np.random.default_rng(0).normal(0.8, 0.05, size=30)
    curve = expected_max_curve(values)
    assert (np.diff(curve["expected"]) >= -1e-12).all()
    assert curve["expected"].iloc[-1] <= values.max()
    low = expected_max_curve(values, maximise=False)
    assert np.allclose(low["expected"], -expected_max_curve(-values)["expected"])
    assert low["expected"].iloc[-1] >= values.min()


def _study(tmp_path: Path) -> tuple[str, list[float]]:
    """Six feasible complete trials, one infeasible (the best value) and one pruned."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    dist = {"ratio": optuna.distributions.FloatDistribution(0.0, 0.9)}
    feasible = [0.70, 0.74, 0.78, 0.80, 0.81, 0.85]
    for job, (value, violation, state) in enumerate(
        [*[(v, -1.0, TrialState.COMPLETE) for v in feasible], (0.95, 1.0, TrialState.COMPLETE),
         (0.99, -1.0, TrialState.PRUNED)]  # Optuna 5 gives a pruned trial its last report
    ):  # fmt: skip
        run_dir = tmp_path / "runs" / str(job)
        write_metrics(run_dir, fake_metrics("joint", 0.5, job, value, 0.5))
        study.add_trial(create_trial(
            params={"ratio": 0.5}, distributions=dist, value=value, state=state,
            user_attrs={"run_dir": str(run_dir)},
            system_attrs={"constraints:macs_speedup>=": violation},
        ))  # fmt: skip
    return storage, feasible


def test_a_study_report_has_the_curve_of_its_feasible_complete_trials(tmp_path: Path) -> None:
    storage, feasible = _study(tmp_path)
    assert commands.main(["report", "--storage", storage, "--study", "s"]) == 0
    text = (tmp_path / "PRUNING_REPORT.md").read_text()
    assert "Expected best validation score" in text and "1 pruned trials left out" in text
    rows = dict(re.findall(r"^\| (\d+) \| ([\d.]+) \|", text, flags=re.M))
    assert set(rows) == {"1", "2", "4", "6"}
    assert float(rows["1"]) == pytest.approx(np.mean(feasible), abs=1e-4)  # not the 0.95 trial
    assert float(rows["6"]) < max(feasible)
    assert (tmp_path / EMV_FILE).stat().st_size > 0
