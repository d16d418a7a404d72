"""Latency in the loop of a search: `latency_speedup` (the speed-up measured on a run's named
latency target) as a sweep's objective or constraint; every trial records the CPU it was measured
on, and a study whose objective or constraints are measured latencies refuses a trial timed on
another CPU. Nothing here times anything: runs are fake metrics.json files and CPUs names chosen
here, but for one real tiny sweep whose latency is a function of the widths."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from helpers.compose import TINY, run_args
from helpers.fake_runs import fake_metrics, finished_job
from optuna.trial import TrialState, create_trial

from kdprune import cli
from kdprune.cpu_features import CpuInfo
from kdprune.errors import ConfigError, MixedCpuError
from kdprune.instantiation import compose_run
from kdprune.results import read_metrics
from kdprune.sweeping.budget import ERROR, REFUSED, counts
from kdprune.sweeping.constraints import DASHBOARD_KEY, Bound, best_trials, parse_constraints
from kdprune.sweeping.one_cpu import CPU_ATTRS, OneCpu
from kdprune.sweeping.selectable import check_latency_target, is_measured, is_selectable
from kdprune.sweeping.storage import open_storage
from kdprune.sweeping.sweeper_checks import check_latency_objectives, check_sweeper
from kdprune.sweeping.worker import Plan, Worker

optuna.logging.set_verbosity(optuna.logging.WARNING)
XEON = {"cpu_model": "Xeon A", "cpu_isa": "avx512f"}
EPYC = {"cpu_model": "EPYC B", "cpu_isa": "avx2"}
LATENCY_SWEEP = ("+sweep=optuna", "prune_method.unit=latency")


def _latency_run(speedup: float, cpu: dict[str, str], val: float = 0.9) -> dict[str, Any]:
    """A `unit=latency` run's metrics: its target, the speed-up measured on it, its CPU."""
    return fake_metrics(
        "prune_then_distill", 0.5, 0, val=val, test=val, unit="latency",
        latency_runtime="onnxruntime", latency_batch_size=64, latency_threads=1,
        latency_ms_before=10.0, latency_ms_after=10.0 / speedup, latency_speedup=speedup,
        cpu_vnni=False, cpu_amx=False, **cpu,
    )  # fmt: skip


def _worker(tmp_path: Path, sweep_metric: Any, constraints: dict[str, Any]) -> Worker:
    """A worker of a fresh SQLite study whose trials the test runs itself (`_tell`)."""
    directions = ["maximize"] * (1 if isinstance(sweep_metric, str) else len(sweep_metric))
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, study_name="lat", directions=directions)
    bounds = parse_constraints(constraints)
    plan = Plan(
        n_trials=10,
        n_objectives=len(directions),
        configure=lambda trial: [],
        launch=lambda overrides, number: None,  # never called: the test tells each trial
        make_sampler=lambda number: optuna.samplers.RandomSampler(seed=number),
        bounds=bounds,
        one_cpu=OneCpu.of(sweep_metric, bounds),
    )
    return Worker(study, plan, grace=60, heartbeat=None)


def _tell(worker: Worker, tmp_path: Path, metrics: dict[str, Any], value: Any) -> int:
    """Ask a trial, and tell it as if its job had written `metrics` and returned `value`."""
    trial = worker.study.ask()
    worker.tell(trial, finished_job(tmp_path / f"run{trial.number}", value, metrics))
    return trial.number


def test_latency_speedup_is_selectable_measured_and_needs_a_latency_target() -> None:
    names = ("latency_speedup", "latency_ms_after", "cpu_speedup_bs64")
    assert all(is_selectable(n) for n in names)
    assert is_measured("latency_speedup") and is_measured("ort_latency_ms_bs64_int8")
    assert not any(is_measured(n) for n in ("macs_speedup", "val_acc", "latency_target_speedup"))
    check_latency_target("latency_speedup", "sweep_metric", "latency")
    check_latency_target("cpu_speedup_bs64", "sweep_metric", "channels")  # every run has it
    with pytest.raises(ConfigError, match="prune_method.unit=latency"):
        check_latency_target("latency_speedup", "sweep_metric", "channels")


def test_the_sweeps_accept_a_latency_constraint_and_objective_without_plus() -> None:
    cfg = compose_run([*TINY, *LATENCY_SWEEP, "hydra.sweeper.constraints.latency_speedup.min=2.0"],
                      with_hydra=True)  # fmt: skip
    check_sweeper(cfg.hydra)
    check_latency_objectives(cfg)
    bounds = parse_constraints(cfg.hydra.sweeper.constraints)
    assert Bound("latency_speedup", 2.0, None) in bounds and len(bounds) == 2  # and macs_speedup
    assert OneCpu.of(cfg.sweep_metric, bounds).measured == ("latency_speedup",)
    plain = compose_run([*TINY, "+sweep=optuna"], with_hydra=True)  # {min: null}: no bound
    assert [b.metric for b in parse_constraints(plain.hydra.sweeper.constraints)] == [
        "macs_speedup"
    ]
    pareto = compose_run([*TINY, "+sweep=pareto", "prune_method.unit=latency",
                          "sweep_metric=[val_acc,latency_speedup]",
                          "hydra.sweeper.direction=[maximize,maximize]",
                          "hydra.sweeper.constraints.latency_speedup.min=1.5"],
                         with_hydra=True)  # fmt: skip
    check_sweeper(pareto.hydra)
    check_latency_objectives(pareto)
    assert parse_constraints(pareto.hydra.sweeper.constraints) == [Bound("latency_speedup", 1.5)]
    cfg.prune_method.unit = "channels"  # the same sweep without a latency target: refused
    with pytest.raises(ConfigError, match="hydra.sweeper.constraints key 'latency_speedup'"):
        check_latency_objectives(cfg)


def test_the_latency_constraint_reaches_optunas_constraint_values(tmp_path: Path) -> None:
    worker = _worker(tmp_path, "val_acc", {"latency_speedup": {"min": 2.0}})
    slow = _tell(worker, tmp_path, _latency_run(1.6, XEON, val=0.95), 0.95)
    fast = _tell(worker, tmp_path, _latency_run(2.5, XEON, val=0.90), 0.90)
    trials = worker.study.trials
    assert trials[slow].constraints["latency_speedup>="] == pytest.approx(0.4)  # > 0: infeasible
    assert trials[fast].constraints["latency_speedup>="] == pytest.approx(-0.5)
    assert trials[slow].system_attrs[DASHBOARD_KEY] == [pytest.approx(0.4)]
    assert [t.number for t in best_trials(worker.study)] == [fast]  # the better value missed it
    assert worker.study.best_trial.number == fast  # Optuna 5 reads the same values
    for trial in trials:
        assert {k: trial.user_attrs[k] for k in XEON} == XEON  # the CPU it was measured on


def test_a_second_cpu_in_a_latency_study_is_refused_and_gives_its_budget_back(
    tmp_path: Path,
) -> None:
    worker = _worker(tmp_path, ["val_acc", "latency_speedup"], {})
    first = _tell(worker, tmp_path, _latency_run(2.0, XEON), [0.9, 2.0])
    with pytest.raises(MixedCpuError) as refused:
        _tell(worker, tmp_path, _latency_run(3.0, EPYC), [0.9, 3.0])
    line = str(refused.value)
    assert "\n" not in line and "trial 1 measured latency_speedup on EPYC B (avx2)" in line
    assert f"on Xeon A (avx512f) (trial {first})" in line and "study lat" in line
    trial = worker.study.trials[1]
    assert trial.state == TrialState.FAIL and trial.values is None and not trial.constraints
    assert trial.user_attrs[REFUSED] and trial.user_attrs[ERROR] == line and not counts(trial)
    assert {k: trial.user_attrs[k] for k in EPYC} == EPYC  # the refused trial records its CPU
    again = _tell(worker, tmp_path, _latency_run(2.5, XEON), [0.8, 2.5])  # the study's CPU
    assert worker.study.trials[again].state == TrialState.COMPLETE


def test_a_trial_timed_on_another_latency_target_is_refused(tmp_path: Path) -> None:
    worker = _worker(tmp_path, "val_acc", {"latency_speedup": {"min": 1.5}})
    first = _tell(worker, tmp_path, _latency_run(2.0, XEON), 0.9)
    batch_1 = _latency_run(2.0, XEON) | {"latency_batch_size": 1}  # same CPU, another target
    with pytest.raises(MixedCpuError) as refused:
        _tell(worker, tmp_path, batch_1, 0.9)
    line = str(refused.value)
    assert "\n" not in line and "latency_speedup on onnxruntime, batch 1, 1 thread(s)" in line
    assert f"on onnxruntime, batch 64, 1 thread(s) (trial {first})" in line
    trial = worker.study.trials[1]
    assert trial.state == TrialState.FAIL and trial.user_attrs[REFUSED]
    assert trial.user_attrs["latency_batch_size"] == 1  # the refused trial records its target
    again = _tell(worker, tmp_path, _latency_run(1.8, XEON), 0.8)
    assert worker.study.trials[again].state == TrialState.COMPLETE

    eager = tmp_path / "eager"  # a study timed on the eager ledger, not on the target: any target
    eager.mkdir()
    other = _worker(eager, "val_acc", {"cpu_speedup_bs64": {"min": 1.0}})
    _tell(other, eager, _latency_run(2.0, XEON), 0.9)
    mixed = _tell(other, eager, batch_1, 0.9)
    assert other.study.trials[mixed].state == TrialState.COMPLETE


def test_cpus_may_mix_where_nothing_told_was_timed(tmp_path: Path) -> None:
    worker = _worker(tmp_path, "val_acc", {"macs_speedup": {"min": 2.0}})
    assert worker.plan.one_cpu.measured == ()
    _tell(worker, tmp_path, _latency_run(2.0, XEON), 0.9)
    other = _tell(worker, tmp_path, _latency_run(2.0, EPYC), 0.8)
    trial = worker.study.trials[other]
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["cpu_model"] == "EPYC B"


def test_a_worker_on_another_cpu_is_refused_before_its_first_trial(tmp_path: Path) -> None:
    worker = _worker(tmp_path, "latency_speedup", {})
    rule, study = worker.plan.one_cpu, worker.study
    epyc = CpuInfo(model="EPYC B", isa="avx2", vnni=False, amx=False)
    rule.check_machine(study, epyc)  # an empty study takes any CPU
    _tell(worker, tmp_path, _latency_run(2.0, XEON), 2.0)
    rule.check_machine(study, CpuInfo(model="Xeon A", isa="avx512f", vnni=True, amx=True))
    with pytest.raises(MixedCpuError, match=r"this machine's CPU is EPYC B \(avx2\)"):
        rule.check_machine(study, epyc)
    OneCpu().check_machine(study, epyc)  # a study that times nothing takes any CPU


NO_TARGET = [
    ("-m", "+sweep=optuna", "hydra.sweeper.constraints.latency_speedup.min=2.0"),
    ("-m", "+sweep=pareto", "sweep_metric=[val_acc,latency_speedup]",
     "hydra.sweeper.direction=[maximize,maximize]"),
    ("sweep_metric=latency_speedup",),  # a single run would train, then miss its objective
]  # fmt: skip


@pytest.mark.parametrize("args", NO_TARGET, ids=lambda a: " ".join(a))
def test_a_latency_objective_without_a_latency_target_is_one_line_and_exit_2(
    monkeypatch, capsys, tmp_path: Path, args: tuple[str, ...]
) -> None:
    monkeypatch.chdir(tmp_path)
    flags = [a for a in args if a.startswith("-")]
    overrides = run_args(tmp_path, *(a for a in args if not a.startswith("-")))
    monkeypatch.setattr(sys, "argv", ["kdprune", *flags, *overrides])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("kdprune: error: ") and "'latency_speedup'" in lines[0], lines
    assert "prune_method.unit=channels" in lines[0], lines
    assert not list(tmp_path.rglob("*.db")) and not list(tmp_path.rglob("metrics.json"))
    assert not (tmp_path / "cache").exists()  # no teacher trained


def test_a_worker_joining_a_timed_study_from_another_cpu_stops_before_training(
    monkeypatch, capsys, tmp_path: Path
) -> None:
    # The study's CPU is a name no real machine has: this test's own CPU is always "another".
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(storage=url, study_name="kdprune-optuna", direction="maximize")
    study.add_trial(create_trial(value=2.0, user_attrs={"cpu_model": "No Such CPU",
                                                        "cpu_isa": "avx2"}))  # fmt: skip
    monkeypatch.chdir(tmp_path)
    sweep = ["+sweep=optuna", "sweep_metric=cpu_speedup_bs64", "hydra/sweeper/pruner=none",
             f"hydra.sweeper.storage={url}", f"hydra.sweep.dir={tmp_path}/runs"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["kdprune", "-m", *run_args(tmp_path, *sweep)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("kdprune: error: ")]
    assert exit_.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    words = "study kdprune-optuna measures cpu_speedup_bs64 on No Such CPU (avx2) (trial 0)"
    assert words in lines[0], lines
    assert len(optuna.load_study(study_name="kdprune-optuna", storage=url).trials) == 1
    assert not list(tmp_path.rglob("metrics.json")) and not (tmp_path / "cache").exists()


def _widths_ms(self, dense, cut, input_shape, clock=None) -> tuple[float, float]:
    """`LatencyTarget.pair_ms` as a function of the widths (a fixed cost of a tenth of the dense
    model's MACs, plus the MACs): no clock is read (tests/test_latency_unit.py does the same)."""
    import torch

    from kdprune.models.counting import count

    x = torch.zeros(1, *input_shape)
    fixed = 0.1 * count(dense, x, "macs")
    return fixed + count(dense, x, "macs"), fixed + count(cut, x, "macs")


def test_a_latency_constrained_sweep_tells_each_runs_measured_speedup(
    monkeypatch, tmp_path: Path
) -> None:
    """The one real sweep here (digits, two tiny trials, in this process): each run cuts to a
    latency target and measures its speed-up on it, and that value becomes its trial's Optuna
    constraint; each trial carries its run's CPU; the best trial is the feasible one."""
    from kdprune.metrics.latency_target import LatencyTarget

    monkeypatch.setattr(LatencyTarget, "pair_ms", _widths_ms)
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/s.db"
    sweep = [*LATENCY_SWEEP, "model=lenet5_wide", "prune_method.latency.batch_size=4",
             "hydra.sweeper.constraints.latency_speedup.min=1.8",
             "hydra.sweeper.constraints.macs_speedup.min=0", "hydra/sweeper/sampler=grid",
             "hydra/sweeper/pruner=none", "prune_method.ratio=choice(0.3,0.5)",
             "hydra.sweeper.n_trials=2", "schedule=prune_then_distill", "kd.alpha=0.5",
             "kd.temperature=4", "budget.finetune_epochs=1", "teacher.epochs=1",
             "trainer.max_batches=2", "measure.repeats=1", f"hydra.sweeper.storage={url}",
             f"hydra.sweep.dir={tmp_path}/runs"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["kdprune", "-m", *run_args(tmp_path, *sweep)])
    cli.main()
    study = optuna.load_study(study_name="kdprune-optuna", storage=url)
    trials = sorted(study.trials, key=lambda t: t.params["prune_method.ratio"])
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for trial in trials:
        metrics = read_metrics(trial.user_attrs["run_dir"])
        assert metrics["unit"] == "latency"
        expected = 1.8 - metrics["latency_speedup"]
        assert trial.constraints["latency_speedup>="] == pytest.approx(expected)
        assert {k: trial.user_attrs[k] for k in CPU_ATTRS} == {k: metrics[k] for k in CPU_ATTRS}
    small, large = trials
    assert small.constraints["latency_speedup>="] > 0 >= large.constraints["latency_speedup>="]
    assert [t.number for t in best_trials(study)] == [large.number]
