"""`kdprune confirm`: a study's top-k feasible configurations re-run on new seeds, intervals."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
from helpers.compose import TINY
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution

from kdprune import commands
from kdprune.results import read_metrics
from kdprune.sweeping.confirm import new_seeds, t_interval
from kdprune.sweeping.constraints import attach_constraints, parse_constraints
from kdprune.sweeping.storage import open_storage

FAST = ["teacher.epochs=1", "budget.student_epochs=2", "budget.finetune_epochs=1",
        "trainer.max_batches=3"]  # fmt: skip
# (value, macs_speedup, prune ratio, search seed): trial 0 has the best value but misses the bound.
TRIALS = [(0.99, 1.1, 0.1, 0), (0.90, 2.5, 0.5, 1000), (0.85, 3.0, 0.6, 0), (0.80, 3.5, 0.7, 0)]


def _study(tmp_path: Path, with_overrides: bool = True) -> str:
    url = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(storage=open_storage(url), study_name="s", direction="maximize")
    bounds = parse_constraints({"macs_speedup": {"min": 2.0}})
    for value, speedup, ratio, seed in TRIALS:
        trial = study.ask({"prune_method.ratio": FloatDistribution(0.0, 1.0)})
        run_dir = tmp_path / "sweep" / str(trial.number)
        (run_dir / ".hydra").mkdir(parents=True)
        overrides = [*TINY, *FAST, f"paths.cache_dir={tmp_path}/cache", f"seed={seed}",
                     f"prune_method.ratio={ratio}"]  # fmt: skip
        if with_overrides:
            OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")
        (run_dir / "metrics.json").write_text(json.dumps({"seed": seed, "val_acc": value}))
        trial.set_user_attr("run_dir", str(run_dir))
        attach_constraints(trial, bounds, {"macs_speedup": speedup})
        study.tell(trial, value)
    pruned = study.ask({"prune_method.ratio": FloatDistribution(0.0, 1.0)})
    pruned.report(0.97, 0)  # the best value of all, but the trial did not run to the end
    attach_constraints(pruned, bounds, {"macs_speedup": 3.0})
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    return url


def _confirm(capsys, *args: str) -> tuple[int, list[str], list[str]]:
    code = commands.main(["confirm", *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.strip().splitlines()


def test_confirm_reruns_the_top_feasible_trials_on_new_seeds(tmp_path, capsys) -> None:
    url, out = _study(tmp_path), tmp_path / "confirm"
    code, lines, err = _confirm(capsys, "--storage", url, "--top", "2", "--seeds", "2",
                                "--out", str(out))  # fmt: skip
    assert code == 0, err
    runs = pd.read_csv(out / "confirm_runs.csv")
    assert sorted(set(runs["trial"])) == [1, 2]  # trial 0 is infeasible, trial 3 is third
    assert sorted(set(runs["seed"])) == [1001, 1002]  # 1000 was trial 1's search seed
    for row in runs.itertuples():
        metrics = read_metrics(row.run_dir)
        assert metrics["seed"] == metrics["data_seed"] == metrics["split_seed"] == row.seed
        assert metrics["target_ratio"] == TRIALS[row.trial][2]
    summary = pd.read_csv(out / "confirm.csv")
    assert list(summary["val_acc"]) == sorted(summary["val_acc"], reverse=True)
    assert (summary["n"] == 2).all()
    for metric in ("val_acc", "test_acc"):
        assert (summary[f"{metric}_low"] <= summary[metric] + 1e-12).all()
        assert (summary[metric] <= summary[f"{metric}_high"] + 1e-12).all()
    assert (out / "confirm.md").read_text().count("\n| ") == 3  # header and two configurations
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")}
    code, lines, _ = _confirm(capsys, "--storage", url, "--top", "2", "--seeds", "2",
                              "--out", str(out))  # fmt: skip
    assert code == 0 and sum("(done before)" in line for line in lines) == 4  # resumed: no run
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("metrics.json")}


@pytest.mark.parametrize(
    ("args", "words"),
    [(["--top", "0"], "--top"), (["--seeds", "1"], "--seeds"), (["--study", "nope"], "nope")],
)
def test_bad_confirm_options_are_one_line(tmp_path, capsys, args, words) -> None:
    code, _, err = _confirm(capsys, "--storage", _study(tmp_path), *args)
    assert code == 2 and len(err) == 1 and err[0].startswith("kdprune: error: ")
    assert words in err[0]
    assert not (tmp_path / "confirm_s").exists()


def test_a_trial_without_saved_overrides_is_refused_before_any_run(tmp_path, capsys) -> None:
    code, _, err = _confirm(capsys, "--storage", _study(tmp_path, with_overrides=False))
    assert code == 2 and len(err) == 1 and "overrides.yaml" in err[0]
    assert not (tmp_path / "cache").exists()


def test_new_seeds_skip_used_ones_and_intervals_need_two_values() -> None:
    assert new_seeds(3, 5, {5, 7}) == [6, 8, 9]
    low, high = t_interval(pd.Series([0.5, 0.7]))
    assert high - 0.6 == pytest.approx(0.6 - low) == pytest.approx(12.7062047 * 0.1)  # t(.975, 1)
    assert pd.isna(t_interval(pd.Series([0.5]))[0])
