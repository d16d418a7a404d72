"""A fair search: selection on validation and cost only (a whitelist), the pruner fed only epochs
after the cut, pruned trials with constraint values, and the dashboard agreeing with kdprune."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import optuna
import pytest
from helpers.compose import run_args
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from kdprune import cli
from kdprune.errors import ConfigError
from kdprune.sweeping.constraints import (
    attach_constraints,
    best_trials,
    feasible_best_storage,
    is_feasible,
    parse_constraints,
)
from kdprune.sweeping.selectable import check_selectable, is_selectable
from kdprune.sweeping.storage import open_storage
from kdprune.sweeping.trial_link import EpochReporter

ALLOWED = ["val_acc", "val_loss", "after_prune_val_acc", "int8_val_acc", "teacher_val_acc",
           "macs_speedup", "params_after", "file_size_bytes", "cpu_latency_ms_bs1_after",
           "cpu_speedup_bs64", "int8_speedup_bs1", "onnx_file_size_bytes_int8", "latency_speedup",
           "latency_ms_after"]  # fmt: skip
REFUSED = ["test_acc", "test_loss", "teacher_test_acc", "int8_test_acc", "int8_test_loss",
           "pruned_teacher_test_acc", "val_acc_on_test", "macs_speedup_test", "x", ""]  # fmt: skip


@pytest.mark.parametrize("name", ALLOWED)
def test_validation_and_cost_metrics_are_selectable(name: str) -> None:
    assert is_selectable(name)
    check_selectable(name, "sweep_metric")
    assert parse_constraints({name: {"min": 0.0}})[0].metric == name


@pytest.mark.parametrize("name", REFUSED)
def test_everything_else_is_refused_as_metric_and_constraint(name: str) -> None:
    assert not is_selectable(name)
    with pytest.raises(ConfigError, match="sweep_metric"):
        check_selectable(name, "sweep_metric")
    with pytest.raises(ConfigError, match="constraints"):
        parse_constraints({name: {"min": 0.5}})


def _kdprune(monkeypatch, capsys, tmp_path: Path, *args: str) -> tuple[int, list[str]]:
    monkeypatch.chdir(tmp_path)
    argv = [a for a in args if a.startswith("-")]
    rest = [a for a in args if not a.startswith("-")]
    monkeypatch.setattr(
        sys, "argv", ["kdprune", *argv, *run_args(tmp_path, *rest), f"hydra.run.dir={tmp_path}/r"]
    )
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    return exit_.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    "args",
    [
        ("data_seed=x",),
        ("split_seed=-1",),
        ("sweep_metric=teacher_test_acc",),
        ("sweep_metric=int8_test_acc",),
        ("sweep_metric=[val_acc,teacher_test_acc]",),
        ("-m", "+sweep=optuna", "+hydra.sweeper.constraints.teacher_test_acc.min=0.5"),
        ("-m", "+sweep=optuna", "+hydra.sweeper.constraints.int8_test_acc.min=0.5"),
    ],
    ids=" ".join,
)
def test_a_test_metric_or_bad_seed_is_one_line(monkeypatch, capsys, tmp_path, args) -> None:
    code, lines = _kdprune(monkeypatch, capsys, tmp_path, *args)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("kdprune: error: "), lines
    assert "test" in lines[0] or "seed" in lines[0]
    assert not list(tmp_path.rglob("metrics.json")) and not (tmp_path / "cache").exists()


def _api(storage, path: str) -> dict:
    """GET an optuna-dashboard API path through its WSGI app; JSON parsed strictly."""
    import io
    import json
    from wsgiref.util import setup_testing_defaults

    import optuna_dashboard

    environ: dict = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(optuna_dashboard.wsgi(storage)(environ, lambda s, h, e=None: status.append(s)))
    assert status[0].startswith("200"), (status, body[:200])

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} is not JSON a browser parses")

    return json.loads(body, parse_constant=no_constants)


def _constrained_study(tmp_path: Path) -> optuna.Study:
    """Three complete trials (the best value infeasible) and one pruned by the reporter."""
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(
        storage=storage, direction="maximize", pruner=optuna.pruners.ThresholdPruner(0.5)
    )
    bounds = parse_constraints({"macs_speedup": {"min": 2.0}})
    for value, speedup in [(0.95, 1.2), (0.90, 2.5), (0.80, 4.0)]:
        trial = study.ask({"ratio": FloatDistribution(0.0, 1.0)})
        attach_constraints(trial, bounds, {"macs_speedup": speedup})
        study.tell(trial, value)
    trial = study.ask({"ratio": FloatDistribution(0.0, 1.0)})
    reporter = EpochReporter(trial, prune=True, bounds=bounds)
    with pytest.raises(optuna.TrialPruned):
        reporter({"stage": "finetune", "after_cut": True, "val_acc": 0.1, "macs_speedup": 3.0})
    study.tell(trial, state=TrialState.PRUNED)
    return study


def test_pruned_trials_carry_the_constraint_values_of_their_cut(tmp_path: Path) -> None:
    pruned = _constrained_study(tmp_path).trials[3]
    assert pruned.state == TrialState.PRUNED
    assert pruned.constraints["macs_speedup>="] == -1.0  # 2.0 - 3.0: feasible
    assert pruned.user_attrs["macs_speedup"] == 3.0 and pruned.user_attrs["feasible"] is True


def test_a_pruned_trial_without_the_metric_is_never_feasible(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(0.5))
    trial = study.ask()
    bounds = parse_constraints({"cpu_latency_ms_bs1_after": {"max": 1.0}})
    with pytest.raises(optuna.TrialPruned):
        EpochReporter(trial, True, bounds)({"stage": "distill", "after_cut": True, "val_acc": 0})
    study.tell(trial, state=TrialState.PRUNED)
    assert study.trials[0].constraints["cpu_latency_ms_bs1_after<="] == math.inf


def test_the_dashboard_shows_constraints_and_kdprunes_best_trial(tmp_path: Path) -> None:
    study = _constrained_study(tmp_path)
    storage = feasible_best_storage(study._storage)
    detail = _api(storage, f"/api/studies/{study._study_id}")
    shown = {t["number"]: t["constraints"] for t in detail["trials"]}
    assert shown == {0: [0.8], 1: [-0.5], 2: [-2.0], 3: [-1.0]}
    assert [t["number"] for t in detail["best_trials"]] == [t.number for t in best_trials(study)]
    assert [t["number"] for t in detail["best_trials"]] == [1]  # 0.90: the best feasible one
    assert study.best_trial.number == 1  # Optuna's own answer agrees


def test_the_dashboard_without_kdprunes_storage_names_an_infeasible_best(tmp_path) -> None:
    study = _constrained_study(tmp_path)  # the reason feasible_best_storage exists
    assert [t["number"] for t in _api(study._storage, f"/api/studies/{study._study_id}")
            ["best_trials"]] == [0]  # fmt: skip


def test_an_unmeasured_constraint_is_shown_as_a_finite_number(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, direction="maximize")
    trial = study.ask()
    attach_constraints(trial, parse_constraints({"macs_speedup": {"min": 2.0}}), {})
    study.tell(trial, 0.5)
    (shown,) = _api(storage, f"/api/studies/{study._study_id}")["trials"]
    assert shown["constraints"][0] > 1e300 and not is_feasible(study.trials[0])


@pytest.mark.parametrize(
    ("order", "method"),
    [("distill_then_prune", "l1_unstructured"), ("joint", "l1"), ("prune_then_distill", "tucker2")],
)
def test_epochs_after_the_cut_carry_the_cut_ledger(make_cfg, tmp_path, order, method) -> None:
    from kdprune.app import run

    seen: list[dict] = []
    cfg = make_cfg("teacher.epochs=1", "budget.student_epochs=3", "budget.finetune_epochs=1",
                   "trainer.max_batches=4", "student_init=teacher", f"schedule={order}",
                   f"prune_method={method}")  # fmt: skip
    metrics = run(cfg, tmp_path / "run", on_epoch=seen.append)
    student = [r for r in seen if r["stage"] != "teacher"]
    after = [r for r in student if r["after_cut"]]
    assert [r["after_cut"] for r in metrics["history"] if r["stage"] != "teacher"] == [
        r["after_cut"] for r in student
    ]
    assert after and after[-1] is student[-1]
    if order != "prune_then_distill":
        assert not student[0]["after_cut"]  # a dense (or not yet fully pruned) epoch first
    for key in ("macs_after", "params_after", "weight_sparsity"):
        assert [r[key] for r in after] == pytest.approx([metrics[key]] * len(after)), key
    assert all("macs_after" not in r for r in metrics["history"])  # the ledger is not history
