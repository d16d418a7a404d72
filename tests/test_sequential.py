"""The sequential verdict: the stopping rule on synthetic per-seed differences, the seed
scheduling on fake run folders with a stub launcher, and a tiny real run on digits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.compose import compose_cfg, run_args
from helpers.fake_runs import fake_metrics
from helpers.hang_guard import HANG_GUARD
from helpers.sequential_runs import ARMS, MARGIN, SD, StubLauncher, default_plan
from scipy import stats

from kdprune import commands
from kdprune.reporting.inference import A_BETTER, B_BETTER, EQUIVALENT
from kdprune.reporting.sequential import (
    look_alphas,
    obrien_fleming,
    planned_looks,
    pocock,
    simulate,
)
from kdprune.reporting.verdicts import Options
from kdprune.results import write_metrics
from kdprune.sweeping.until_decided import (
    SEED_FOLDER,
    Arm,
    Plan,
    done_seeds,
    grid_arms,
    until_decided,
)


def test_spending_functions_spend_alpha_by_the_cap() -> None:
    looks = planned_looks(4, 2, 16)
    assert looks == [4, 6, 8, 10, 12, 14, 16]
    assert planned_looks(4, 5, 16) == [4, 9, 14, 16]  # the cap is always the last look
    for spending in ("obrien-fleming", "pocock"):
        alphas = look_alphas(looks, 0.05, spending)
        assert sum(alphas) == pytest.approx(0.05) and min(alphas) > 0
    # O'Brien-Fleming type at t = 1/4: 2 - 2 Phi(1.95996 / 0.5) = 2 - 2 Phi(3.9199) (tables)
    assert obrien_fleming(0.25) == pytest.approx(2 * stats.norm.sf(1.959964 / 0.5), rel=1e-5)
    assert obrien_fleming(0.25) < pocock(0.25) and pocock(1.0) == pytest.approx(0.05)


def test_a_planted_half_point_difference_is_decided_a_better_before_the_cap() -> None:
    rng = np.random.default_rng(1)
    looks = planned_looks()
    for _ in range(5):
        (decision,) = simulate(rng.normal(0.005, SD, (1, 16)), MARGIN, looks)
        assert decision.verdict == A_BETTER and decision.n < 16
    (decision,) = simulate(rng.normal(-0.005, SD, (1, 16)), MARGIN, looks)
    assert decision.verdict == B_BETTER and decision.decided


def test_no_difference_ends_equivalent_within_the_cap() -> None:
    rng = np.random.default_rng(2)
    looks = planned_looks()
    for _ in range(5):
        (decision,) = simulate(rng.normal(0.0, SD, (1, 16)), MARGIN, looks)
        assert decision.verdict.startswith(EQUIVALENT) and decision.n <= 16
        assert decision.look is not None and 1 <= decision.look <= len(looks)


def test_a_difference_at_the_margin_is_not_called_equivalent() -> None:
    rng = np.random.default_rng(3)
    said = [
        simulate(rng.normal(MARGIN, SD, (1, 16)), MARGIN, planned_looks())[0].verdict
        for _ in range(20)
    ]
    assert not any(s.startswith(EQUIVALENT) for s in said)


def test_null_families_keep_the_false_verdict_rate_over_all_looks() -> None:
    rng = np.random.default_rng(4)
    families, looks = 200, planned_looks()
    false = 0
    for _ in range(families):  # three contrasts a family, like the orders of one KD arm
        said = [d.verdict for d in simulate(rng.normal(0.0, SD, (3, 16)), MARGIN, looks)]
        false += any(s in (A_BETTER, B_BETTER) for s in said)
    # The union bound over looks keeps the rate at or below 5%; 200 families estimate it with a
    # standard error of about 1.5 points, so check the count is consistent with <= 5%.
    assert stats.binomtest(false, families, 0.05, alternative="greater").pvalue > 0.01
    assert false / families < 0.1


# --- the schedule: which arms get seeds, on fake run folders (no training) ---


def test_only_undecided_contrasts_arms_get_new_seeds(tmp_path) -> None:
    launch = StubLauncher()
    outcome = until_decided(tmp_path, ARMS, default_plan(), launch)
    joint = Arm(("schedule=joint",)).name
    first = [arms for arms, seeds in launch.calls if seeds == (0, 1, 2, 3)]
    assert sorted(first) == sorted(a.name for a in ARMS)  # look 1: every arm, seeds 0..3
    verdicts = {frozenset(k): d for k, d in outcome.decisions.items()}
    assert len(verdicts) == 3
    joint_fp = fake_metrics("joint", 0.5, 0, 0.9, 0.9)["config_fingerprint"]
    by_joint = [d for k, d in outcome.decisions.items() if joint_fp in k]
    # joint is 5 points worse: decided against both other orders at an early look ...
    assert all(d.verdict in (A_BETTER, B_BETTER) for d in by_joint) and len(by_joint) == 2
    decided_at = max(d.n for d in by_joint)
    # ... and gets no seed after that, while the two equal orders go on until decided
    assert done_seeds(tmp_path, Arm(("schedule=joint",))) == set(range(decided_at))
    later = {name for name, seeds in launch.calls if min(seeds) >= decided_at}
    assert later and joint not in later
    (equal,) = [d for k, d in outcome.decisions.items() if joint_fp not in k]
    assert equal.n > decided_at and equal.verdict.startswith(EQUIVALENT)
    assert done_seeds(tmp_path, ARMS[0]) == set(range(equal.n))


def test_running_again_reuses_every_finished_run(tmp_path) -> None:
    first = until_decided(tmp_path, ARMS, default_plan(), StubLauncher())
    stray = fake_metrics("joint", 0.5, 0, 0.9, 0.99, kd="none")  # another grid's run: not seen
    write_metrics(tmp_path / "kd-none__schedule-joint" / SEED_FOLDER.format(seed=0), stray)
    again = StubLauncher()
    second = until_decided(tmp_path, ARMS, default_plan(), again)
    assert again.calls == [] and second.decisions == first.decisions
    # a lost run is run again, and only it
    lost = tmp_path / ARMS[2].name / SEED_FOLDER.format(seed=1) / "metrics.json"
    lost.unlink()
    third = StubLauncher()
    assert until_decided(tmp_path, ARMS, default_plan(), third).decisions == first.decisions
    assert third.calls == [(ARMS[2].name, (1,))]


def test_the_report_says_what_stayed_undecided_at_the_cap(tmp_path, capsys) -> None:
    from kdprune.sweeping.sequential_cli import _finish

    plan = Plan(planned_looks(4, 2, 6), options=Options(analysis="paired", margin=MARGIN))
    outcome = until_decided(tmp_path, ARMS, plan, StubLauncher())
    assert _finish(tmp_path, ARMS, plan, outcome) == 0
    table = pd.read_csv(tmp_path / "sequential.csv").set_index(["a", "b"])
    # the two equal orders cannot be told apart by 6 seeds; joint's contrasts are decided
    same = table.loc[("prune_then_distill, kd=hinton", "distill_then_prune, kd=hinton")]
    assert same["sequential_verdict"] == "undecided at n = 6 (cap)"
    assert math.isnan(same["decided_at_look"]) and same["seeds_needed"] == 6
    decided = table.drop(index=same.name)
    assert decided["decided_at_look"].notna().all() and len(decided) == 2
    assert decided["sequential_verdict"].str.endswith("kd=hinton better").all()
    text = (tmp_path / "PRUNING_REPORT.md").read_text()
    assert "2 of 3 contrasts decided; 1 undecided at the cap" in text
    assert "undecided at n = 6 (cap)" in capsys.readouterr().out


def test_a_diverged_run_is_not_reused(tmp_path) -> None:
    arm = ARMS[0]
    run = tmp_path / arm.name / SEED_FOLDER.format(seed=0)
    where = {"stage": "joint", "epoch": 1, "step": 3, "error": "loss is nan"}
    write_metrics(run, {**fake_metrics("joint", 0.5, 0, 0.9, 0.9), "status": "diverged",
                        "diverged": where})  # fmt: skip
    write_metrics(run.parent / "seed_1", fake_metrics("joint", 0.5, 1, 0.9, 0.9))
    assert done_seeds(tmp_path, arm) == {1}


def test_bad_options_are_refused_in_one_line(capsys) -> None:
    assert commands.main(["verdict", "+sweep=orders"]) == 2
    assert "--until-decided" in capsys.readouterr().err
    assert commands.main(["verdict", "--until-decided", "--start", "1", "+sweep=orders"]) == 2
    assert "--start" in capsys.readouterr().err
    assert commands.main(["verdict", "--until-decided", "+sweep=optuna"]) == 2
    assert "grid sweep" in capsys.readouterr().err
    err = commands.main(["verdict", "--until-decided", "+sweep=orders", "kd=nosuch"])
    assert err == 2 and capsys.readouterr().err.count("\n") == 1


def test_every_arm_is_checked_before_any_run(tmp_path, capsys) -> None:
    """An arm other than the first with a config no run could use stops the verdict before
    its first look, in one line naming the arm."""
    argv = ["verdict", "--until-decided", "--dir", str(tmp_path), "dataset=digits",
            "+sweep=orders", "prune_method.ratio=0.5,1.5"]  # fmt: skip
    assert commands.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "arm " in err and "ratio-1.5" in err
    assert not any(tmp_path.iterdir())  # nothing ran


# --- a tiny real run: digits, two arms, cap 4 seeds, batch 2 ---


def inprocess_launcher(base: list[str]):
    """Runs each (arm, seed) in this process through `kdprune.app.run` (real training)."""
    from kdprune.app import run

    def launch(arm: Arm, seeds: Sequence[int], folder: Path) -> None:
        for seed in seeds:
            cfg = compose_cfg(*base, *arm.overrides, f"seed={seed}")
            run(cfg, folder / arm.name / SEED_FOLDER.format(seed=seed))

    return launch


@pytest.mark.slow  # the looks and scheduling are tested with a stub launcher above
def test_tiny_real_sequential_verdict_on_digits(tmp_path) -> None:
    from kdprune.sweeping import sequential_cli

    base = run_args(tmp_path, "+sweep=orders", "prune_method.ratio=0.5", "schedule=joint")
    args = commands._parser().parse_args(
        ["verdict", "--until-decided", "--start", "2", "--batch", "2", "--cap", "4",
         "--dir", str(tmp_path / "runs"), *base, "kd=none,hinton"]
    )  # fmt: skip
    assert sequential_cli.run(args, inprocess_launcher) == 0
    table = pd.read_csv(tmp_path / "runs" / "verdicts.csv")
    assert len(table) == 1 and {"sequential_verdict", "decided_at_look"} <= set(table.columns)
    row = table.iloc[0]
    undecided = math.isnan(row["decided_at_look"])
    assert row["seeds_needed"] == (4 if undecided else 2 * row["decided_at_look"])
    assert row["sequential_verdict"].startswith("undecided at n = 4") == undecided
    text = (tmp_path / "runs" / "PRUNING_REPORT.md").read_text()
    assert "## Sequential verdict" in text and "Lan & DeMets (1983)" in text
    finished = list((tmp_path / "runs").rglob("metrics.json"))
    assert len(finished) == 2 * row["seeds_needed"]  # both arms, every seed of the last look


@pytest.mark.slow
def test_the_command_runs_hydra_multiruns_per_arm_and_resumes(tmp_path) -> None:
    """`kdprune verdict --until-decided` end to end: a `kdprune -m` child per arm and look, job
    folders DIR/<arm>/seed_<s>; the same command again launches nothing."""
    import os
    import subprocess
    import sys

    out = tmp_path / "runs"
    command = [
        sys.executable, "-m", "kdprune", "verdict", "--until-decided", "--start", "2",
        "--batch", "2", "--cap", "4", "--dir", str(out),
        *run_args(tmp_path, "+sweep=orders", "prune_method.ratio=0.5", "schedule=joint"),
        "kd=none,hinton",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=HANG_GUARD)
    assert first.returncode == 0, first.stderr[-2000:]
    table = pd.read_csv(out / "sequential.csv")
    n = int(table["seeds_needed"].iloc[0])
    for kd in ("none", "hinton"):
        arm = Arm((f"kd={kd}", "prune_method.ratio=0.5", "schedule=joint"))
        assert done_seeds(out, arm) == set(range(n))
        assert (out / arm.name / "seed_0" / ".hydra" / "overrides.yaml").is_file()
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=HANG_GUARD)
    assert again.returncode == 0 and "[HYDRA]" not in again.stdout + again.stderr
    assert pd.read_csv(out / "sequential.csv").equals(table)


def test_kd_none_under_a_second_teacher_is_one_arm() -> None:
    from kdprune.sweeping.sequential_cli import distinct_arms

    grid = {"kd": "none,hinton", "teacher": "same,cnn5", "schedule": "joint"}
    arms = distinct_arms(["dataset=digits"], grid_arms(grid))
    names = sorted(a.name for a in arms)
    assert names == [
        "kd-hinton__schedule-joint__teacher-cnn5",
        "kd-hinton__schedule-joint__teacher-same",
        "kd-none__schedule-joint__teacher-same",  # its runs serve the cnn5 arm's kd=none too
    ]
