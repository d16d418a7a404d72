"""The `kdprune` command: check the command line's group choices, then hand over to Hydra."""

from __future__ import annotations

import sys

from kdprune.paths import config_groups, group_options


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


def main() -> None:
    """Entry point of the `kdprune` console script and `python -m kdprune`."""
    argv = sys.argv[1:]
    if argv and argv[0] in {"report", "evaluate", "export-onnx"}:
        from kdprune import commands

        sys.exit(commands.main(argv))
    error = check_group_overrides(argv)
    if error:
        print(f"kdprune: error: {error}", file=sys.stderr)
        sys.exit(2)
    from kdprune.app import hydra_main

    hydra_main()
