"""Sweeps whose trials are jobs of several processes (`kdprune -m ... distributed.nproc=2`,
kdprune.ranks_job): the sweeper samples each trial once, the job starts its ranks with exactly
that job's overrides and returns rank 0's result, a failed rank fails its trial alone, and what
cannot work is refused in one line before any work.

The job's side runs in this process with a stand-in for the launcher (tests/helpers/fake_ranks.py,
no rank, no training); the last tests run real studies of two-process trials (gloo, one thread per
rank) end to end, as a user would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from helpers.compose import run_args
from helpers.hang_guard import HANG_GUARD
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict
from optuna.trial import TrialState

from kdprune import cli, ranks_job
from kdprune.distributed import Ranks, check_run, config_difference
from kdprune.errors import ConfigError, NonFiniteLossError, Preempted
from kdprune.instantiation import compose_run
from kdprune.results import (
    METRICS_FILE,
    STATUS_DIVERGED,
    config_sha256,
    flatten,
    read_metrics,
    write_metrics,
)
from kdprune.run_record import build_record
from kdprune.sweeping.budget import ERROR
from kdprune.sweeping.worker import RANK_CONFIGS

FAKE = Path(__file__).resolve().parent / "helpers" / "fake_ranks.py"
TINY_SWEEP = ("+sweep=optuna", "teacher.epochs=1", "trainer.max_batches=2", "measure.repeats=1")
# Four trials, one per grid point: which ratio and alpha each got is the trial's to tell.
GRID = ("hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=4", "hydra/sweeper/pruner=none",
        "prune_method.ratio=choice(0.3,0.6)", "kd.alpha=choice(0.2,0.8)",
        "schedule=distill_then_prune", "kd.temperature=4", "budget.finetune_epochs=1")  # fmt: skip
# What one rank-0 run writes (tests/test_torchrun.py): the job's .hydra/ and one log among them.
RUN_FILES = {".hydra", "app.log", "metrics.json", "model.pt", "dense.pt", "test_predictions.npy"}


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="kdprune-optuna", storage=f"sqlite:///{tmp_path}/s.db")


def _fake_launcher(monkeypatch, *options: str) -> None:
    """Jobs start tests/helpers/fake_ranks.py, not `python -m kdprune.launch`, same arguments."""
    real = ranks_job.launch_command

    def command(nproc: int, task, hydra, run_dir: Path) -> list[str]:
        line = real(nproc, task, hydra, run_dir)
        assert line[1:3] == ["-m", "kdprune.launch"]
        return [line[0], str(FAKE), *options, *line[3:]]

    monkeypatch.setattr(ranks_job, "launch_command", command)


def _kdprune_here(monkeypatch, tmp_path: Path, *args: str) -> None:
    """`kdprune <args>` in this process, from tmp_path, its study in tmp_path/s.db."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KDPRUNE_STORAGE", f"sqlite:///{tmp_path}/s.db")
    flags = [a for a in args if a.startswith("-")]
    rest = [a for a in args if not a.startswith("-")]
    monkeypatch.setattr(sys, "argv", ["kdprune", *flags, *run_args(tmp_path, *rest)])
    cli.main()


def _sweep_here(monkeypatch, tmp_path: Path, *args: str) -> list[optuna.trial.FrozenTrial]:
    sweep = ("-m", *TINY_SWEEP, *GRID, "distributed.nproc=2", f"hydra.sweep.dir={tmp_path}/runs")
    _kdprune_here(monkeypatch, tmp_path, *sweep, *args)
    return sorted(_study(tmp_path).trials, key=lambda t: t.number)


def _params(trial) -> tuple[float, float]:
    return trial.params["prune_method.ratio"], trial.params["kd.alpha"]


def test_each_trial_job_hands_its_sampled_parameters_to_every_rank(monkeypatch, tmp_path) -> None:
    _fake_launcher(monkeypatch)
    trials = _sweep_here(monkeypatch, tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert {_params(t) for t in trials} == {(r, a) for r in (0.3, 0.6) for a in (0.2, 0.8)}
    for trial in trials:
        run_dir = Path(trial.user_attrs["run_dir"])
        assert run_dir == (tmp_path / "runs" / str(trial.number)).resolve()
        metrics = read_metrics(run_dir)
        config = metrics["config"]
        assert (config["prune_method"]["ratio"], config["kd"]["alpha"]) == _params(trial)
        assert config["distributed"]["nproc"] == 2
        by_rank = metrics[RANK_CONFIGS]
        assert by_rank == [config_sha256(config)] * 2  # both ranks composed that config
        assert trial.user_attrs[RANK_CONFIGS] == by_rank  # and the study says so
        assert trial.value == trial.params["kd.alpha"]  # the objective is rank 0's val_acc
        assert (run_dir / ".hydra" / "config.yaml").exists()  # the job's, as in any sweep


def test_a_trial_whose_rank_fails_is_failed_with_its_line_and_the_study_goes_on(
    monkeypatch, tmp_path
) -> None:
    _fake_launcher(monkeypatch, "--fail-above", "0.5")
    trials = _sweep_here(monkeypatch, tmp_path)
    assert len(trials) == 4
    for trial in trials:
        run_dir = Path(trial.user_attrs["run_dir"])
        if trial.params["kd.alpha"] > 0.5:
            assert trial.state == TrialState.FAIL
            assert (
                trial.user_attrs[ERROR]
                == "rank 1 of 2 exited with code 3; the job stopped (a fake rank)"
            )
            assert not (run_dir / METRICS_FILE).exists()
        else:
            assert trial.state == TrialState.COMPLETE


def test_a_single_run_of_several_processes_ends_with_its_ranks_line_and_code(
    monkeypatch, capsys, tmp_path
) -> None:
    _fake_launcher(monkeypatch, "--fail-above", "0.5")
    args = ("distributed.nproc=2", f"hydra.run.dir={tmp_path}/run")
    _kdprune_here(monkeypatch, tmp_path, *args, "kd.alpha=0.25")
    assert (
        read_metrics(tmp_path / "run")[RANK_CONFIGS]
        == [config_sha256(read_metrics(tmp_path / "run")["config"])] * 2
    )
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        _kdprune_here(monkeypatch, tmp_path, "distributed.nproc=2", "kd.alpha=0.75",
                      f"hydra.run.dir={tmp_path}/failed")  # fmt: skip
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 3 and lines == [
        "kdprune: error: rank 1 of 2 exited with code 3; the job stopped (a fake rank)"
    ]


def test_every_rank_composes_exactly_the_jobs_config_as_one_run(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("KDPRUNE_STORAGE", f"sqlite:///{tmp_path}/s.db")
    task = ["+sweep=optuna", "dataset=digits", "kd.alpha=0.25", "distributed.nproc=2"]
    hydra = [f"hydra.sweep.dir={tmp_path}/s", "hydra.run.dir=elsewhere", "hydra.mode=MULTIRUN"]
    command = ranks_job.launch_command(2, task, hydra, tmp_path / "s" / "3")
    assert command[:5] == [sys.executable, "-m", "kdprune.launch", "--nproc", "2"]
    ranks, job = compose_run(command[5:], with_hydra=True), compose_run(task, with_hydra=True)
    assert ranks.hydra.mode == RunMode.RUN and job.hydra.mode == RunMode.MULTIRUN
    assert ranks.hydra.run.dir == str(tmp_path / "s" / "3")
    assert ranks.hydra.output_subdir is None  # the job wrote .hydra/ already
    assert ranks.hydra.sweep.dir == str(tmp_path / "s")  # the user's Hydra settings go along
    for cfg in (ranks, job):
        with open_dict(cfg):
            del cfg["hydra"]
    assert OmegaConf.to_container(ranks, resolve=True) == OmegaConf.to_container(job, resolve=True)
    # Each rank checks its command line as one run: the sweep's rules are not its own.
    assert cli.check_command_line(command[5:]) is None


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", "true"])
def test_a_bad_nproc_is_one_line_before_anything_runs(monkeypatch, capsys, tmp_path, value) -> None:
    with pytest.raises(SystemExit) as exit_:
        _kdprune_here(
            monkeypatch, tmp_path, f"distributed.nproc={value}", f"hydra.run.dir={tmp_path}/r"
        )
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("kdprune: error: distributed.nproc must be a whole number >= 1")
    assert not (tmp_path / "r").exists() and not (tmp_path / "cache").exists()


def test_a_pruner_is_refused_for_trials_of_several_processes(monkeypatch, capsys, tmp_path) -> None:
    args = ("-m", "+sweep=optuna", "distributed.nproc=2", f"hydra.sweep.dir={tmp_path}/runs")
    with pytest.raises(SystemExit) as exit_:
        _kdprune_here(monkeypatch, tmp_path, *args)  # +sweep=optuna's median pruner
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1, lines
    assert "optuna.pruners.MedianPruner could never stop a trial" in lines[0]
    assert "hydra/sweeper/pruner=none" in lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "s.db").exists()
    # The same study of one-process trials prunes as before.
    assert cli.check_command_line(["-m", *run_args(tmp_path, "+sweep=optuna")]) is None


def test_what_a_job_of_several_processes_cannot_do_is_refused_before_its_ranks_start(
    monkeypatch,
) -> None:
    def composed(*overrides: str):
        return compose_run(["+sweep=optuna", "distributed.nproc=2", *overrides], with_hydra=True)

    sweep = composed()  # its median pruner
    with pytest.raises(ConfigError, match="could never stop a trial"):
        ranks_job.check_job(sweep, sweep.hydra, 2)  # nproc swept: each job checks again
    ranks_job.check_job(sweep, composed("hydra.mode=RUN").hydra, 2)  # one run: no pruner
    ranks_job.check_job(sweep, composed("hydra/sweeper/pruner=none").hydra, 2)
    with pytest.raises(ConfigError, match="quantize=ptq runs in one process"):
        ranks_job.check_job(composed("quantize=ptq"), sweep.hydra, 2)
    monkeypatch.setattr(ranks_job, "pick_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="one rank per GPU, and this machine has 1"):
        ranks_job.check_job(sweep, composed("hydra.mode=RUN").hydra, 2)


def test_nproc_inside_torchrun_must_be_its_world_size(make_cfg) -> None:
    with pytest.raises(ConfigError, match="already started this run as one of 2"):
        check_run(make_cfg("distributed.nproc=4"), Ranks(0, 2))
    check_run(make_cfg("distributed.nproc=2"), Ranks(1, 2))  # the ranks of a job it started
    check_run(make_cfg("distributed.nproc=1"), Ranks(1, 2))  # torchrun's own: it decides


def test_how_a_jobs_ranks_ended_says_what_the_job_tells(tmp_path: Path) -> None:
    script = ("import sys; print('a warning', file=sys.stderr); "
              "print('kdprune: error: rank 1 of 2 exited with code 3', file=sys.stderr); "
              "sys.exit(3)")  # fmt: skip
    code, errors = ranks_job.wait_for([sys.executable, "-c", script], tmp_path)
    assert code == 3
    failed = ranks_job.failure(tmp_path, code, errors, 2)
    assert isinstance(failed, ranks_job.RanksFailed) and failed.exit_code == 3
    assert str(failed) == "rank 1 of 2 exited with code 3"
    assert str(ranks_job.failure(tmp_path, 1, "", 2)) == "the job's 2 ranks exited with code 1"
    assert isinstance(ranks_job.failure(tmp_path, 143, "kdprune: stopped by SIGTERM", 2), Preempted)
    where = {"stage": "distill", "epoch": 2, "step": 5, "error": "loss is nan"}
    identity = {"order": "joint", "model": "lenet5", "dataset": "digits", "seed": 0}
    record = {"status": STATUS_DIVERGED, "diverged": where, "config": {}, "config_fingerprint": ""}
    write_metrics(tmp_path, build_record(identity, record))
    diverged = ranks_job.failure(tmp_path, 1, "kdprune: error: the run diverged", 2)
    assert isinstance(diverged, NonFiniteLossError) and str(diverged) == "loss is nan"
    assert diverged.where == {"stage": "distill", "epoch": 2, "step": 5}


def test_ranks_that_composed_different_configs_are_named_by_a_key() -> None:
    main = {"kd": {"alpha": 0.2, "temperature": 4}, "seed": 0}
    other = {"kd": {"alpha": 0.8, "temperature": 4}, "seed": 0}
    line = config_difference(flatten(main), flatten(other), 1)
    assert line == "rank 1's kd.alpha is 0.8, rank 0's 0.2"
    assert "rank 1's seed is absent, rank 0's 0" == config_difference(
        flatten(main), {"kd.alpha": 0.2, "kd.temperature": 4}, 1
    )
    assert Ranks().agree_on_config(main) == [config_sha256(main)]
    assert config_sha256(main) != config_sha256(other)


def _sweep(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`kdprune -m` of two-process trials on digits, in a new process, as a user starts it."""
    ours = {k: v for k, v in os.environ.items() if k != "KDPRUNE_FAULT"}
    env = {**ours, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
           "KDPRUNE_STORAGE": f"sqlite:///{tmp_path}/s.db", **(env or {})}  # fmt: skip
    args = run_args(tmp_path, *TINY_SWEEP, *GRID, "distributed.nproc=2",
                    f"hydra.sweep.dir={tmp_path}/runs", *args)  # fmt: skip
    command = [sys.executable, "-m", "kdprune", "-m", *args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=HANG_GUARD)  # fmt: skip


def test_a_study_of_two_process_trials_runs_each_trial_alike_on_both_ranks(tmp_path) -> None:
    done = _sweep(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trials = sorted(_study(tmp_path).trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert {_params(t) for t in trials} == {(r, a) for r in (0.3, 0.6) for a in (0.2, 0.8)}
    for trial in trials:
        run_dir = Path(trial.user_attrs["run_dir"])
        metrics = read_metrics(run_dir)
        assert (metrics["world_size"], metrics["backend"]) == (2, "gloo")
        # What each rank ran: the hash of the config it composed. Both hold rank 0's config,
        # and it has this trial's parameters.
        config = {k: v for k, v in metrics["config"].items() if k != "data_identity"}
        assert metrics[RANK_CONFIGS] == [config_sha256(config)] * 2
        assert (config["prune_method"]["ratio"], config["kd"]["alpha"]) == _params(trial)
        assert trial.user_attrs[RANK_CONFIGS] == metrics[RANK_CONFIGS]
        assert trial.value == metrics["val_acc"]
        by_rank = metrics["architecture_sha256_by_rank"]
        assert len(by_rank) == 2 and len(set(by_rank)) == 1  # one pruned model
        # Rank 0 alone wrote: one run's files, and one log line per epoch.
        assert {p.name for p in run_dir.iterdir()} == RUN_FILES
        assert (run_dir / "app.log").read_text().count("finetune epoch 1:") == 1
    sources = [read_metrics(Path(t.user_attrs["run_dir"]))["teacher_source"] for t in trials]
    assert sorted(sources) == ["cache", "cache", "cache", "trained"]  # trained by one trial
    assert {p.name for p in tmp_path.iterdir()} == {"cache", "runs", "s.db"}  # nothing else


@pytest.mark.slow  # the in-process test above fails trials through the same path, without ranks
def test_a_rank_that_dies_fails_its_trial_in_one_line_and_the_study_goes_on(tmp_path) -> None:
    done = _sweep(tmp_path, "hydra.sweeper.n_trials=2", env={"KDPRUNE_FAULT": "1:distill:1:1:exit"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trials = _study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    for trial in trials:
        assert trial.user_attrs[ERROR].startswith("rank 1 of 2 exited with code 3; the job stopped")
        assert not (Path(trial.user_attrs["run_dir"]) / METRICS_FILE).exists()
