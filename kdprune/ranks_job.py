"""A job whose config asks for several processes (`distributed.nproc: N`, N > 1).

The job starts its N ranks with `kdprune.launch` (torchrun on this machine, in one line), waits
for them and takes rank 0's metrics.json as its result. Every job of a sweep does the same
(`kdprune -m ... distributed.nproc=2`): the sweeper samples a trial's parameters once, in its own
process, and the job hands exactly its own overrides and output folder to every rank, so no rank
samples or composes anything else (lightning-hydra-template #639: under DDP each rank sampled
its own hyperparameters). The sweep sees one job per trial, as with one process. Each rank
records the hash of the config it composed (metrics.json's `config_sha256_by_rank`), and a run
whose ranks composed different configs stops in one line (`Ranks.agree_on_config`).

A failed rank fails the job with one line (`kdprune.launch` names the rank and its error); in a
sweep the trial is recorded failed with that line and the sweep goes on. A job never hangs on its
ranks: a rank that dies ends torchrun's job, one that hangs fails the others' collectives after
`distributed.timeout_s`.
"""

from __future__ import annotations

import logging
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.types import RunMode
from omegaconf import DictConfig

from kdprune import distributed
from kdprune.distributed import Ranks, check_run, processes, quoted
from kdprune.engine import pick_device
from kdprune.errors import ConfigError, FaultError, NonFiniteLossError, Preempted
from kdprune.results import METRICS_FILE, STATUS_DIVERGED, read_metrics
from kdprune.run_record import DIVERGED, STATUS

log = logging.getLogger("kdprune")

# Hydra settings of the job that its ranks get otherwise: one run (not a sweep), in the job's
# own output folder, without a second `.hydra/` (the job wrote it, with the sweep's view of it).
REPLACED = ("hydra.mode", "hydra.run.dir", "hydra.output_subdir")
STOPPED = 128 + signal.SIGTERM  # the exit code of ranks stopped by SIGTERM (kdprune.cli)


class RanksFailed(FaultError):
    """A job's ranks ended with an error: its one line and the launcher's exit code."""

    def __init__(self, line: str, exit_code: int):
        super().__init__(line)
        self.exit_code = exit_code


def wanted(cfg: DictConfig) -> bool:
    """Whether this job starts ranks: `distributed.nproc` > 1, in a process torchrun did not
    start (a rank runs its share of the run instead; `check_run` refuses a mismatch)."""
    return processes(cfg.get("distributed") or {}) > 1 and not distributed.current().active


def launch_command(
    nproc: int, task: Sequence[str], hydra: Sequence[str], run_dir: Path
) -> list[str]:
    """The `python -m kdprune.launch` command line of a job's ranks: the job's overrides
    (`hydra.overrides.task`, and Hydra's own but for REPLACED), as one run in `run_dir`."""
    kept = [o for o in hydra if o.lstrip("+~").split("=", 1)[0] not in REPLACED]
    return [
        sys.executable, "-m", "kdprune.launch", "--nproc", str(nproc), *task, *kept,
        "hydra.mode=RUN", f"hydra.run.dir={quoted(str(run_dir))}", "hydra.output_subdir=null",
    ]  # fmt: skip


def check_job(cfg: DictConfig, hydra_cfg: DictConfig, nproc: int) -> None:
    """One line before any rank starts: what a run over several processes cannot do, a sweep
    pruner (`check_trial_processes`), more ranks than this machine's GPUs."""
    check_run(cfg, Ranks(world_size=nproc))
    if hydra_cfg.mode == RunMode.MULTIRUN:
        from kdprune.sweeping.sweeper_checks import check_trial_processes  # imports Optuna

        check_trial_processes(hydra_cfg, nproc)
    device = pick_device(str(cfg.device))
    if device.type == "cuda" and torch.cuda.device_count() < nproc:
        raise ConfigError(
            f"distributed.nproc={nproc} starts one rank per GPU, and this machine has "
            f"{torch.cuda.device_count()}: ask for at most that many, or run on cpu"
        )


def run_job(cfg: DictConfig, hydra_cfg: Any) -> dict[str, Any]:
    """Start the job's ranks, wait for them and return rank 0's metrics; an error that says
    how they failed (`RanksFailed`, a divergence, `Preempted`) otherwise. `hydra_cfg`:
    `HydraConfig.get()` of the job."""
    nproc = processes(cfg.distributed)
    check_job(cfg, hydra_cfg, nproc)
    run_dir = Path(hydra_cfg.runtime.output_dir).resolve()
    overrides = hydra_cfg.overrides
    command = launch_command(nproc, list(overrides.task), list(overrides.hydra), run_dir)
    log.info("starting %d ranks: %s", nproc, shlex.join(command[1:]))
    code, errors = wait_for(command, Path(hydra_cfg.runtime.cwd))
    if code != 0:
        raise failure(run_dir, code, errors, nproc)
    print(errors, end="", file=sys.stderr)  # rank 0's warnings, as a run in one process shows
    return read_metrics(run_dir)


def wait_for(command: Sequence[str], cwd: Path) -> tuple[int, str]:
    """Run the ranks' launcher until it ends: its exit code and its stderr (the failure's one
    line, or rank 0's warnings); its stdout (rank 0's log) goes to ours as it comes. On an
    interrupt (Ctrl-C, a second SIGTERM) the launcher gets SIGTERM, which torchrun passes to
    every rank (each saves its epoch and stops), and is waited for."""
    with subprocess.Popen(list(command), cwd=cwd, stderr=subprocess.PIPE, text=True) as proc:
        try:
            _, errors = proc.communicate()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
    return proc.returncode, errors


def failure(run_dir: Path, code: int, errors: str, nproc: int) -> BaseException:
    """What a job's failed ranks mean: a stop (SIGTERM), a divergence (rank 0 recorded it in
    metrics.json, as one process does), or the launcher's one line and exit code."""
    if code == STOPPED:
        return Preempted(signal.Signals.SIGTERM.name)
    if (run_dir / METRICS_FILE).exists():
        metrics = read_metrics(run_dir)
        if metrics.get(STATUS) == STATUS_DIVERGED:
            where = metrics[DIVERGED]
            return NonFiniteLossError(where["error"], where["stage"], where["epoch"], where["step"])
    lines = [ln for ln in errors.splitlines() if ln.startswith("kdprune: ")]
    line = lines[-1].removeprefix("kdprune: ").removeprefix("error: ") if lines else ""
    return RanksFailed(line or f"the job's {nproc} ranks exited with code {code}", code)
