"""The `kdprune` command: check the command line in one line's worth of error, then hand over to
Hydra (runs and sweeps) or to a subcommand (report, evaluate, export-onnx, sensitivity)."""

from __future__ import annotations

import sys

from kdprune.paths import config_groups, group_options

SUBCOMMANDS = ("report", "evaluate", "export-onnx", "sensitivity", "dashboard", "confirm")
# Hydra's own flags that compose or print nothing we could check first: leave them to Hydra.
PASS_THROUGH_FLAGS = ("-m", "--multirun")


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
    from omegaconf import open_dict

    from kdprune.checks import validate
    from kdprune.config import compose_run, trusted
    from kdprune.errors import KdpruneError, one_line
    from kdprune.sweeping.checks import check_sweeper

    overrides = [a for a in argv if a not in PASS_THROUGH_FLAGS]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
        cfg = compose_run(fixed, with_hydra=True)
        check_sweeper(cfg.hydra)
        with open_dict(cfg):
            del cfg["hydra"]
        with trusted(cfg.get("trusted_targets") or ()):
            validate(cfg)
    except KdpruneError as err:
        return str(err)
    except Exception as err:  # Hydra's parse and composition errors: a user's typo
        return one_line(err)
    return None


def main() -> None:
    """Entry point of the `kdprune` console script and `python -m kdprune`."""
    argv = sys.argv[1:]
    if argv and argv[0] in SUBCOMMANDS:
        from kdprune import commands

        sys.exit(commands.main(argv))
    error = check_group_overrides(argv) or check_command_line(argv)
    if error:
        print(f"kdprune: error: {error}", file=sys.stderr)
        sys.exit(2)
    from kdprune.app import hydra_main

    hydra_main()
