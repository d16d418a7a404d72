"""The `kdprune` command: check the command line in one line's worth of error, then hand over to
Hydra (runs and sweeps) or to a subcommand (report, evaluate, export-onnx, sensitivity)."""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Callable

from kdprune.paths import config_groups, group_options

SUBCOMMANDS = (
    "report", "evaluate", "export-onnx", "sensitivity", "dashboard", "confirm", "verdict",
)  # fmt: skip
# Hydra's own flags that compose or print nothing we could check first: leave them to Hydra.
PASS_THROUGH_FLAGS = ("-m", "--multirun")
# Hydra's flags that print something and run nothing: no sweeper (Optuna) needed.
PRINT_ONLY_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i")
# `scheme://user:password@host`: a URL that carries a password.
URL_PASSWORD = re.compile(r"://[^/@:\s]*:[^/@\s]+@")


def check_secrets(argv: list[str]) -> str | None:
    """One-line error for an override whose URL holds a password: Hydra writes every override
    (and the composed config) into each job's `.hydra/` files, in plain text."""
    for arg in argv:
        key, _, value = arg.partition("=")
        if value and URL_PASSWORD.search(value):
            return (
                f"{key.lstrip('+~')} holds a password, which Hydra would write into every job's "
                ".hydra/ files: give the storage URL in the KDPRUNE_STORAGE environment variable "
                "(the sweeps read it), or keep the password in ~/.pgpass (PGPASSFILE) and leave "
                "it out of the URL"
            )
    return None


def check_group_overrides(argv: list[str]) -> str | None:
    """One-line error for `group=option` overrides naming an option that does not exist, else None.

    Hydra reports these itself, but over several lines; this says the same in one, before any work.
    """
    groups = set(config_groups())
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key not in groups or "(" in value or not value:
            continue  # not a group choice, or a sweep expression Hydra checks
        choices = group_options(key)
        for option in value.split(","):
            if option not in choices and option != "null":
                return f"unknown {key} {option!r}; choose from: {', '.join(choices)}"
    return None


def check_command_line(argv: list[str]) -> str | None:
    """Compose the run as Hydra will (sweep values aside) and validate it: a one-line error, or
    None. Command lines with other Hydra flags (--cfg, --help, ...) are left to Hydra."""
    if any(a.startswith("-") and a not in PASS_THROUGH_FLAGS for a in argv):
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode
    from omegaconf import open_dict

    from kdprune.config_checks import validate
    from kdprune.errors import KdpruneError, one_line
    from kdprune.instantiation import compose_run, input_line, trusted
    from kdprune.sweeping.sweeper_config import SWEEPER

    overrides = [a for a in argv if a not in PASS_THROUGH_FLAGS]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        fixed = [input_line(o) for o in parsed if not o.is_sweep_override()]
        cfg = compose_run(fixed, with_hydra=True)
        if (cfg.hydra.get("sweeper") or {}).get("_target_") == SWEEPER:
            from kdprune.distributed import processes
            from kdprune.sweeping.sweeper_checks import (
                check_latency_objectives,
                check_sweeper,
                check_trial_processes,
            )

            check_sweeper(cfg.hydra)  # imports Optuna
            check_latency_objectives(cfg)
            if "-m" in argv or "--multirun" in argv or cfg.hydra.mode == RunMode.MULTIRUN:
                check_trial_processes(cfg.hydra, processes(cfg.get("distributed") or {}))
        with open_dict(cfg):
            del cfg["hydra"]
        with trusted(cfg.get("trusted_targets") or ()):
            validate(cfg)
    except KdpruneError as err:
        return str(err)
    except Exception as err:  # Hydra's parse and composition errors: a user's typo
        return one_line(err)
    return None


def checked_elsewhere(argv: list[str]) -> str | None:
    """`check_command_line`, unless a `kdprune verdict` that checked this arm launched us."""
    if "-m" in argv:
        from kdprune.sweeping.arms import CHECKED_ENV

        if os.environ.get(CHECKED_ENV) == "verdict":
            return None
    return check_command_line(argv)


def main() -> None:
    """Entry point of the `kdprune` console script and `python -m kdprune`."""
    argv = sys.argv[1:]
    if argv and argv[0] in SUBCOMMANDS:
        from kdprune import commands

        sys.exit(commands.main(argv))
    error = check_secrets(argv) or check_group_overrides(argv) or checked_elsewhere(argv)
    if error:
        print(f"kdprune: error: {error}", file=sys.stderr)
        sys.exit(2)
    from kdprune.entry import hydra_main, register_sweeper

    if not any(a.split("=")[0] in PRINT_ONLY_FLAGS for a in argv):
        register_sweeper()
    from kdprune.preemption import stop_on_sigterm

    with stop_on_sigterm():
        if launched_by_torchrun(argv):
            run_ranks(hydra_main)
        else:
            run_hydra(hydra_main)


def launched_by_torchrun(argv: list[str]) -> bool:
    """True for a run (not --help, --cfg, ...) started by torchrun as one of several processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    return not any(a.startswith("-") and a not in PASS_THROUGH_FLAGS for a in argv)


def run_ranks(hydra_main: Callable[[], None]) -> None:
    """One rank of a torchrun job: start the process group, agree on the run folder, run Hydra
    (`kdprune.launch.start_rank`), then leave the group; a failed rank exits at once."""
    from kdprune import launch
    from kdprune.errors import KdpruneError, one_line

    code: int = 0
    try:
        sys.argv = [sys.argv[0], *launch.start_rank(sys.argv[1:])]
        run_hydra(hydra_main)
    except SystemExit as end:
        code = end.code if isinstance(end.code, int) else 1
        if isinstance(end.code, str):
            print(end.code, file=sys.stderr)
    except KdpruneError as err:  # the launch's own checks
        print(f"kdprune: error: {err}", file=sys.stderr)
        code = 2
    except Exception as err:  # the process group did not start (rendezvous, backend)
        print(f"kdprune: error: the process group did not start: {one_line(err)}", file=sys.stderr)
        code = 1
    finally:
        launch.leave(code)


def run_hydra(hydra_main: Callable[[], None]) -> None:
    """Run Hydra with its errors raised here rather than printed as tracebacks: a fault (no
    database, a full disk) ends in one line. A user's own HYDRA_FULL_ERROR=1 keeps tracebacks."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        hydra_main()
        return
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from kdprune.errors import FaultError, KdpruneError, Preempted, one_line, os_error_line

    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing and exit(1)
    try:
        hydra_main()
    except Preempted as why:
        if os.environ.get("RANK", "0") == "0":  # one line for the job, not one per rank
            print(
                f"kdprune: stopped by {why}: the training state of the last finished epoch is "
                "saved, no partial file is left; the same command resumes from it",
                file=sys.stderr,
            )
        sys.exit(128 + signal.SIGTERM)
    except KdpruneError as err:
        print(f"kdprune: error: {err}", file=sys.stderr)
        sys.exit(1 if isinstance(err, FaultError) else 2)
    except OSError as err:
        sys.exit(f"kdprune: error: {os_error_line(err)}")
    except (HydraException, OmegaConfBaseException) as err:  # what Hydra would have printed
        print(f"kdprune: error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
    finally:
        del os.environ["HYDRA_FULL_ERROR"]
