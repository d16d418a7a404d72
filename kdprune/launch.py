"""Starting a run on several processes: the launcher and each rank's start.

`python -m kdprune.launch --nproc N [kdprune arguments]`: torchrun on one machine, in one line.

The same job as `torchrun --standalone --nproc_per_node=N -m kdprune ...` (it runs torchrun's own
launcher, `torch.distributed.run`), with the ranks' stderr kept in a temporary folder: a job that
fails ends with one line, the error line of the rank that failed first (or how it ended: exit
code, signal), instead of one line per rank and torchrun's report. After a job that went well,
rank 0's stderr (warnings) is shown; the folder is removed either way. Logs go to stdout as usual
(rank 0's; the others log warnings only). `NPROC=N make run` starts it.

`start_rank` and `leave` are each rank's side (the `kdprune` command calls them when torchrun
started it as one of several processes).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from kdprune.distributed import check_options, hydra_overrides, start, without_run_dir
from kdprune.engine import pick_device
from kdprune.errors import COLLECTIVE_FAILED, ConfigError
from kdprune.instantiation import compose_run

log = logging.getLogger("kdprune")

RESUMES = "the same command resumes from the last finished epoch"


def parse(argv: list[str]) -> tuple[int, list[str]]:
    """--nproc N and the kdprune arguments after it."""
    parser = argparse.ArgumentParser(prog="python -m kdprune.launch", add_help=True)
    parser.add_argument("--nproc", type=int, required=True, help="processes (ranks) to start")
    args, rest = parser.parse_known_args(argv)
    if args.nproc < 1:
        parser.error(f"--nproc must be at least 1, got {args.nproc}")
    return args.nproc, [a for a in rest if a != "--"]


def main(argv: list[str] | None = None) -> int:
    """Run kdprune on `--nproc` ranks; return the job's exit code."""
    nproc, rest = parse(sys.argv[1:] if argv is None else argv)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    # torchrun's agent logs each step of a failure (and a closing signal per rank): one line here.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default, without its warning
    with tempfile.TemporaryDirectory(prefix="kdprune-ranks-") as logs:
        args = get_args_parser().parse_args(
            [
                "--standalone",
                f"--nproc_per_node={nproc}",
                f"--log-dir={logs}",
                "--redirects=2",
                "--module",
                "kdprune",
                *rest,
            ]  # fmt: skip
        )
        try:
            run(args)
        except ChildFailedError as err:
            rank, failure = root_failure(err, Path(logs))
            print(failure_line(Path(logs), rank, failure, nproc), file=sys.stderr)
            return failure.exitcode if failure.exitcode > 0 else 1
        show(Path(logs), local_rank=0)
    return 0


def _stderr(logs: Path, local_rank: int) -> list[str]:
    """The lines a rank wrote to stderr (its newest attempt)."""
    files = sorted(logs.glob(f"*/attempt_*/{local_rank}/stderr.log"))
    return files[-1].read_text(errors="replace").splitlines() if files else []


def root_failure(err, logs: Path):
    """The rank whose failure started it, and that failure. torchrun's first failure is the
    earliest by a timestamp in whole seconds, so a rank that failed only because a collective
    with the dead rank failed, or that torchrun stopped with a signal, can tie with the dead
    rank and be named instead. The cause comes first: a rank that ended on its own (not by a
    signal) and not through a failed collective, then the earliest, then the lowest rank."""

    def consequence(item) -> tuple:
        rank, failure = item
        lines = _stderr(logs, failure.local_rank)
        collective = any(COLLECTIVE_FAILED in line for line in lines)
        return (collective, failure.exitcode < 0, failure.timestamp, rank)

    return min(err.failures.items(), key=consequence)


def failure_line(logs: Path, rank: int, failure, nproc: int) -> str:
    """One line for a failed job: the first failed rank's own `kdprune:` line, else how it
    ended."""
    lines = [ln for ln in _stderr(logs, failure.local_rank) if ln.startswith("kdprune: ")]
    if lines:
        return lines[-1]
    code = failure.exitcode
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    return f"kdprune: error: rank {rank} of {nproc} {how}; the job stopped ({RESUMES})"


def show(logs: Path, local_rank: int) -> None:
    """Copy a rank's stderr to ours (after a job that went well: its warnings)."""
    for line in _stderr(logs, local_rank):
        print(line, file=sys.stderr)


def start_rank(argv: Sequence[str]) -> list[str]:
    """Start this rank of a torchrun job and return the command line it runs: the user's, with
    rank 0's run folder on every rank (Hydra's `${now:...}` would give each its own) and, on the
    other ranks, Hydra settings that write no file. Their log is quiet but for warnings."""
    if any(a in ("-m", "--multirun") for a in argv):
        raise ConfigError(
            "torchrun runs one experiment over several processes: drop -m (for a sweep whose "
            "trials run on N processes each, run `kdprune -m ... distributed.nproc=N` without "
            "torchrun)"
        )
    cfg = compose_run(list(argv), with_hydra=True)
    backend, timeout = check_options(cfg.get("distributed") or {})
    ranks = start(backend, pick_device(cfg.device), timeout)
    run_dir = ranks.broadcast_object(str(cfg.hydra.run.dir) if ranks.is_main else None)
    if not ranks.is_main:
        log.setLevel(logging.WARNING)
    return [*without_run_dir(argv), *hydra_overrides(ranks, run_dir)]


def leave(exit_code: int) -> None:
    """End this rank: leave the process group after a run that went well; after a failure, exit
    at once (a process group whose peers are gone may hang or abort on the way out)."""
    if exit_code == 0 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


if __name__ == "__main__":
    sys.exit(main())
