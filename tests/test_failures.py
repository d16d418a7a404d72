"""Failures that are not a typo end in one line too: a run that diverges (a result, recorded in
its metrics.json and listed in the report), a study database that is not there, a full disk,
and a password where Hydra would write it down. Each runs `python -m kdprune` in a new process,
as a user would."""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.compose import run_args
from helpers.hang_guard import HANG_GUARD

from kdprune import commands
from kdprune.reporting.runs import CSV_FILE
from kdprune.results import read_metrics
from kdprune.run_record import REQUIRED

# Two student epochs of two batches: lr 1e6 makes the distill loss non-finite within them.
SHORT = ("teacher.epochs=1", "trainer.max_batches=2", "budget.student_epochs=2",
         "budget.finetune_epochs=1", "measure.repeats=1")  # fmt: skip
SECRET = "Sup3rSecret"

# `kdprune` with every atomic write below $FULL_DIR failing half-way as a full disk does.
FULL_DISK = """
import errno, os, sys
import kdprune.results as results

full, atomic_write = os.environ["FULL_DIR"], results.atomic_write


def filling(path, write):
    if not os.path.abspath(path).startswith(full):
        return atomic_write(path, write)

    def half(fh):
        fh.write(b"half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return atomic_write(path, half)


results.atomic_write = filling
sys.argv = ["kdprune", *sys.argv[1:]]
from kdprune.cli import main

main()
"""


def _kdprune(cwd: Path, *args: str, env: dict[str, str] | None = None,
             script: str | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    command = [sys.executable, *(["-c", script] if script else ["-m", "kdprune"]), *args]
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=HANG_GUARD,
        env={**os.environ, "WANDB_MODE": "offline", **(env or {})},
    )  # fmt: skip


def _one_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdprune: "), done.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """A folder whose cache (teachers) the runs of this module share."""
    return tmp_path_factory.mktemp("failures")


@pytest.fixture(scope="module")
def diverged_sweep(shared: Path) -> Iterator[tuple[subprocess.CompletedProcess, Path]]:
    """A grid multirun whose middle job (lr 1e6) diverges: its process and sweep folder."""
    sweep = shared / "sweep"
    args = run_args(shared, *SHORT, "optimizer.lr=1e-3,1e6,2e-3", f"hydra.sweep.dir={sweep}")
    yield _kdprune(shared, "-m", *args), sweep


def test_a_multirun_with_a_diverged_job_ends_in_one_summary_line(diverged_sweep) -> None:
    done, sweep = diverged_sweep
    assert done.returncode == 1, done.stderr[-3000:]
    line = _one_line(done)
    assert re.fullmatch(rf"kdprune: 1 of 3 runs diverged: {sweep}/1 \(\w+ epoch \d+ step \d+\)",
                        line), line  # fmt: skip


def test_the_diverged_job_records_where_and_the_others_finish(diverged_sweep) -> None:
    _, sweep = diverged_sweep
    statuses = {job: read_metrics(sweep / job)["status"] for job in ("0", "1", "2")}
    assert statuses == {"0": "ok", "1": "diverged", "2": "ok"}
    diverged = read_metrics(sweep / "1")
    where = diverged["diverged"]
    assert where["stage"] in ("teacher", "distill", "finetune") and where["epoch"] >= 1
    assert where["step"] >= 1 and "NaN or infinite" in where["error"]
    assert diverged["config"]["optimizer"]["lr"] == 1e6 and "val_acc" not in diverged
    assert not list(sweep.rglob("*.tmp"))


def test_the_report_lists_diverged_runs_apart(diverged_sweep, capsys) -> None:
    _, sweep = diverged_sweep
    assert commands.main(["report", str(sweep), "--out", str(sweep / "report")]) == 0
    text = (sweep / "report" / "PRUNING_REPORT.md").read_text()
    section = text[text.index("## Diverged runs") :]
    assert f"`{sweep}/1`" in section and "distill_then_prune" in section
    ledger = (sweep / "report" / CSV_FILE).read_text().splitlines()
    assert len(ledger) == 3 and not any(row.endswith(f"{sweep}/1") for row in ledger)
    assert "1 diverged run(s)" in capsys.readouterr().out


def test_a_single_diverged_run_is_one_line_with_its_record(shared: Path) -> None:
    run = shared / "single"
    done = _kdprune(shared, *run_args(shared, *SHORT, "optimizer.lr=1e6", f"hydra.run.dir={run}"))
    assert done.returncode == 1
    line = _one_line(done)
    assert line.startswith("kdprune: error: the run diverged: ") and str(run) in line
    assert read_metrics(run)["status"] == "diverged"
    assert (run / "app.log").is_file()  # the run's log keeps its name (conf: hydra.job.name)


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound by this process, never listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


# One source of the URL is enough for `make test`; the other runs the same code path after it.
@pytest.mark.parametrize("where", ["override", pytest.param("environment", marks=pytest.mark.slow)])
def test_a_study_database_that_is_not_there_is_one_line(tmp_path, refused_port, where) -> None:
    url = f"postgresql://nobody:{SECRET}@127.0.0.1:{refused_port}/none"
    if where == "override":  # no password: that is refused before (see the next test)
        args, env = [f"hydra.sweeper.storage={url.replace(f':{SECRET}', '')}"], None
    else:
        args, env = [], {"KDPRUNE_STORAGE": url}
    done = _kdprune(tmp_path, "-m", "+sweep=optuna", *run_args(tmp_path, *args), env=env)
    assert done.returncode == 1
    line = _one_line(done)
    assert f"127.0.0.1:{refused_port}" in line and "refused" in line.lower(), line
    assert SECRET not in line
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("sweep", [False, True])
def test_a_password_in_an_override_is_refused(tmp_path, sweep) -> None:
    storage = f"hydra.sweeper.storage=postgresql://kd:{SECRET}@127.0.0.1/kdprune"
    args = ["-m", "+sweep=optuna"] if sweep else []
    done = _kdprune(tmp_path, *args, *run_args(tmp_path, storage))
    assert done.returncode == 2
    line = _one_line(done)
    assert "KDPRUNE_STORAGE" in line and "pgpass" in line and SECRET not in line
    assert not any(tmp_path.iterdir())  # no .hydra/ folder, nothing written


def test_a_password_in_kdprune_storage_is_in_no_file(tmp_path, postgres) -> None:
    # The test server trusts loopback connections, so any password gets in.
    url = postgres.database("secret_study").replace("://kdprune@", f"://kdprune:{SECRET}@")
    args = run_args(tmp_path, *SHORT, "+sweep=optuna", "hydra.sweeper.n_trials=1",
                    "hydra/sweeper/pruner=none", f"hydra.sweep.dir={tmp_path}/runs")  # fmt: skip
    done = _kdprune(tmp_path, "-m", *args, env={"KDPRUNE_STORAGE": url})
    assert done.returncode == 0, done.stderr[-3000:]
    assert SECRET not in done.stdout + done.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "metrics.json" for p in files)
    assert not [p for p in files if SECRET.encode() in p.read_bytes()]


# Both folders go through one atomic writer: the run folder in `make test`, the cache in test-all.
@pytest.mark.parametrize("full", ["run", pytest.param("cache", marks=pytest.mark.slow)])
def test_a_full_disk_is_one_line_naming_the_file(tmp_path, full) -> None:
    run = tmp_path / "run"
    folder = run if full == "run" else tmp_path / "cache"
    args = run_args(tmp_path, *SHORT, f"hydra.run.dir={run}")
    done = _kdprune(tmp_path, *args, script=FULL_DISK, env={"FULL_DIR": str(folder)})
    assert done.returncode == 1
    line = _one_line(done)
    assert line.startswith(f"kdprune: error: {folder}/") and os.strerror(errno.ENOSPC) in line
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("metrics.json"))
    assert not list(folder.rglob("*.pt"))  # nothing half-written


def test_diverged_metrics_are_valid_json_with_documented_keys(diverged_sweep) -> None:
    _, sweep = diverged_sweep
    keys = set(json.loads((sweep / "1" / "metrics.json").read_text()))
    assert keys == {"record_version", "status", "diverged", "order", "model", "dataset", "seed",
                    "config", "config_fingerprint"}  # fmt: skip
    assert keys == REQUIRED["diverged"]  # what kdprune.run_record requires of a diverged run
