"""The parts of a shared study, in this process: the budget rule, stale trials, constraints and the
best feasible trial, the epoch reporter that prunes, job outcomes, and one-line storage errors."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from kdprune.errors import ConfigError, FaultError
from kdprune.sweeping import storage as storage_module
from kdprune.sweeping.budget import (
    INTERRUPTED,
    SURPLUS,
    WORKER,
    counts,
    fail_stale_trials,
    give_back,
    may_run,
)
from kdprune.sweeping.constraints import (
    attach_constraints,
    best_trials,
    is_feasible,
    parse_constraints,
)
from kdprune.sweeping.optuna_sweeper import SharedStudySweeper
from kdprune.sweeping.storage import BeatWatch, check_storage, open_storage
from kdprune.sweeping.trial_link import EpochReporter
from kdprune.sweeping.worker import job_outcome

optuna.logging.set_verbosity(optuna.logging.WARNING)
RATIO = {"ratio": FloatDistribution(0.0, 1.0)}


def _study(tmp_path: Path, *directions: str, heartbeat: int | None = None) -> optuna.Study:
    storage = open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat_interval=heartbeat)
    return optuna.create_study(storage=storage, directions=list(directions or ["maximize"]))


def test_two_workers_asking_for_the_last_trial_run_it_once(tmp_path: Path) -> None:
    study = _study(tmp_path)
    for _ in range(2):  # two finished trials of n_trials=3
        study.tell(study.ask(), 0.5)
    first, second = study.ask(), study.ask()  # two workers ask at the same moment
    assert may_run(study, first.number, 3)
    assert not may_run(study, second.number, 3)  # numbered later: it gives its trial back
    give_back(study, second)
    assert sum(counts(t) for t in study.trials) == 2  # the surplus trial does not count
    assert study.trials[second.number].user_attrs[SURPLUS]


def test_a_stale_trial_is_failed_interrupted_and_others_are_not_touched(
    tmp_path: Path, monkeypatch
) -> None:
    study = _study(tmp_path, heartbeat=1)
    stale, live = study.ask(), study.ask()
    for trial in (stale, live):
        trial.set_user_attr(WORKER, "host:1:1")
    rdb = study._storage
    monkeypatch.setattr(rdb, "_get_stale_trial_ids", lambda study_id: [stale._trial_id])
    assert fail_stale_trials(study, BeatWatch(grace=60)) == [stale.number]
    assert fail_stale_trials(study, BeatWatch(grace=60)) == []  # already failed: nothing twice
    by_number = {t.number: t for t in study.trials}
    assert by_number[stale.number].state == TrialState.FAIL
    assert by_number[stale.number].user_attrs[INTERRUPTED] and not counts(by_number[stale.number])
    assert by_number[live.number].state == TrialState.RUNNING


def test_beat_watch_needs_an_unchanged_token_for_the_grace_period(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(storage_module.time, "monotonic", lambda: clock[0])
    watch = BeatWatch(grace=5)
    assert watch.stale({1: None, 2: 10.0}) == []
    clock[0] = 104.0
    assert watch.stale({1: None, 2: 11.0}) == []  # trial 2 beat
    clock[0] = 106.0
    assert watch.stale({1: None, 2: 11.0}) == [1]  # 6 s without a beat for 1, 2 for trial 2
    clock[0] = 110.0
    assert watch.stale({2: 11.0}) == [2]


def test_journal_heartbeats_keep_a_trial_alive(tmp_path: Path, monkeypatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(storage_module.time, "monotonic", lambda: clock[0])
    storage = open_storage(f"journal:///{tmp_path}/s.log", heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(storage=storage)
    beating, silent = study.ask(), study.ask()
    for trial in (beating, silent):
        storage.record_heartbeat(trial._trial_id)
    watch = BeatWatch(grace=3)
    assert fail_stale_trials(study, watch) == []
    clock[0] = 4.0
    storage.record_heartbeat(beating._trial_id)
    assert fail_stale_trials(study, watch) == [silent.number]
    states = {t.number: t.state for t in study.trials}
    assert states == {beating.number: TrialState.RUNNING, silent.number: TrialState.FAIL}


def test_constraints_parse_into_optuna_values() -> None:
    (bound,) = parse_constraints({"macs_speedup": {"min": 2.0}})
    assert bound.violations(3.0) == {"macs_speedup>=": -1.0}  # feasible: <= 0
    assert bound.violations(1.5) == {"macs_speedup>=": 0.5}
    assert bound.violations(None) == {"macs_speedup>=": math.inf}  # unknown: never feasible
    for bad in ({"macs_speedup": 2}, {"macs_speedup": {"least": 2}}, {"test_acc": {"min": 0.5}},
                {"macs_speedup": {"min": "two"}}):  # fmt: skip
        with pytest.raises(ConfigError):
            parse_constraints(bad)


def test_the_best_trial_is_the_best_feasible_one(tmp_path: Path) -> None:
    study = _study(tmp_path)
    bounds = parse_constraints({"macs_speedup": {"min": 2.0}})
    for value, speedup in [(0.95, 1.2), (0.90, 2.5), (0.80, 4.0)]:  # the best value misses it
        trial = study.ask()
        trial.suggest_float("ratio", 0.0, 1.0)
        attach_constraints(trial, bounds, {"macs_speedup": speedup})
        study.tell(trial, value)
    best = best_trials(study)
    assert [t.value for t in best] == [0.90] and is_feasible(best[0])
    assert study.best_trial.value == 0.90  # Optuna 5 reads the same constraint values
    assert study.trials[0].user_attrs["macs_speedup"] == 1.2


def test_no_feasible_trial_no_best(tmp_path: Path) -> None:
    study = _study(tmp_path)
    study.add_trial(create_trial(value=0.9, params={"ratio": 0.1}, distributions=RATIO,
                                 system_attrs={"constraints:macs_speedup>=": 1.0}))  # fmt: skip
    assert best_trials(study) == []


def test_a_pareto_front_holds_feasible_trials_only(tmp_path: Path) -> None:
    study = _study(tmp_path, "maximize", "minimize")
    for values, violation in [((0.9, 5.0), 1.0), ((0.8, 4.0), -1.0), ((0.7, 2.0), -1.0),
                              ((0.6, 3.0), -1.0)]:  # fmt: skip
        study.add_trial(create_trial(values=list(values), params={"ratio": 0.5},
                                     distributions=RATIO,
                                     system_attrs={"constraints:c": violation}))  # fmt: skip
    assert sorted(tuple(t.values) for t in best_trials(study)) == [(0.7, 2.0), (0.8, 4.0)]


def test_the_epoch_reporter_reports_student_epochs_after_the_cut_and_prunes() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(0.5))
    trial = study.ask()
    reporter = EpochReporter(trial, prune=True)
    reporter({"stage": "teacher", "epoch": 1, "val_acc": 0.1})  # not the student: not reported
    reporter({"stage": "distill", "epoch": 1, "val_acc": 0.2, "after_cut": False})  # still dense
    reporter({"stage": "finetune", "epoch": 1, "val_acc": 0.7, "after_cut": True})
    with pytest.raises(optuna.TrialPruned, match="epoch 2 after the cut"):
        reporter({"stage": "finetune", "epoch": 2, "val_acc": 0.3, "after_cut": True})
    assert study.trials[0].intermediate_values == {0: 0.7, 1: 0.3}


def test_job_outcomes() -> None:
    def ret(status: JobStatus, value: object) -> JobReturn:
        job = JobReturn()
        job.status, job._return_value = status, value
        return job

    assert job_outcome(ret(JobStatus.COMPLETED, 0.9), 1) == (TrialState.COMPLETE, [0.9], "")
    assert job_outcome(ret(JobStatus.COMPLETED, (0.9, 3)), 2)[1] == [0.9, 3.0]
    assert job_outcome(ret(JobStatus.COMPLETED, (0.9, 3)), 1)[0] == TrialState.FAIL
    pruned = job_outcome(ret(JobStatus.FAILED, optuna.TrialPruned("pruned after 1")), 1)
    assert pruned[0] == TrialState.PRUNED
    failed = job_outcome(ret(JobStatus.FAILED, ValueError("loss is nan\nmore")), 1)
    assert failed == (TrialState.FAIL, None, "loss is nan")


def test_a_grid_study_runs_at_most_its_grid() -> None:
    """n_trials is capped at the grid's size: every combination of the choices, a repeated
    choice counted again (as Optuna's GridSampler visits it again)."""
    grid_sampler = OmegaConf.create({"_target_": "optuna.samplers.GridSampler", "_partial_": True})
    options = {"direction": "maximize", "n_jobs": 1, "max_failure_rate": 0.0}
    arguments = ["trainer.lr=range(1,4)", "seed=3", "kd=choice(a,a,b)"]
    for n_trials, capped in ((100, 2 * 3 * 3), (5, 5)):
        params = OmegaConf.create({"kd.alpha": "choice(0.1,0.5)"})
        sweeper = SharedStudySweeper(
            grid_sampler, None, {**options, "n_trials": n_trials, "params": params}
        )
        space, fixed, _ = sweeper._search_space(arguments)
        assert set(space) == {"kd.alpha", "trainer.lr", "kd"} and fixed == {"seed": "3"}
        assert sweeper.grid == {
            "kd.alpha": (0.1, 0.5),
            "trainer.lr": [1, 2, 3],
            "kd": ("a", "a", "b"),
        }
        assert sweeper.n_trials == capped


@pytest.mark.parametrize(
    "url, words",
    [
        ("postgresql+psycopg2://me:secret@127.0.0.1/db", ["psycopg2", "not installed"]),
        ("nosuchdb://host/db", ["cannot use storage"]),
        ("study.db", ["must be a URL"]),
    ],
)
def test_storage_errors_are_one_line(url: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        check_storage(url)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert "secret" not in message  # passwords are never printed


def test_a_postgresql_url_without_any_driver_says_what_to_install(monkeypatch) -> None:
    import sqlalchemy.dialects.postgresql.psycopg as dialect

    def missing() -> None:
        raise ModuleNotFoundError("No module named 'psycopg'", name="psycopg")

    monkeypatch.setattr(dialect.PGDialect_psycopg, "import_dbapi", staticmethod(missing))
    with pytest.raises(ConfigError, match=r"psycopg.*pip install") as err:
        check_storage("postgresql://me@127.0.0.1/kdprune")
    assert "\n" not in str(err.value)


def test_a_worker_that_loses_the_race_to_create_the_tables_tries_again(
    tmp_path: Path, monkeypatch
) -> None:
    from sqlalchemy.exc import OperationalError

    real, calls = storage_module.RDBStorage, []

    def racing(*args, **kwargs):  # the first try meets tables another worker is creating
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError(
                "CREATE TABLE", {}, Exception("table version_info already exists")
            )
        return real(*args, **kwargs)

    monkeypatch.setattr(storage_module, "RDBStorage", racing)
    optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path}/s.db"))
    assert len(calls) == 2
    monkeypatch.setattr(storage_module, "RDBStorage", lambda *a, **k: (_ for _ in ()).throw(
        OperationalError("connect", {}, Exception("could not connect to server"))))  # fmt: skip
    with pytest.raises(FaultError, match="could not connect to server"):  # not retried: one line
        open_storage(f"sqlite:///{tmp_path}/other.db")
