"""`kdprune confirm`: its options and its run (the work is in kdprune.sweeping.confirm)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kdprune.errors import KdpruneError
from kdprune.paths import journal_file, sqlite_file


def add_parser(sub: Any) -> None:
    """`kdprune confirm --storage URL [--top K --seeds N]`."""
    confirm = sub.add_parser(
        "confirm",
        help="re-run the top-k configurations of an Optuna study on new seeds, with intervals",
        description="Re-run the best feasible trials of a study (their own overrides) on seeds "
        "they did not use; write confirm.csv, confirm_runs.csv and confirm.md (95%% t intervals).",
    )
    confirm.add_argument("--storage", required=True, help="Optuna storage URL of the study")
    confirm.add_argument("--study", help="study name in --storage (optional if it holds one)")
    confirm.add_argument("--top", type=int, default=3, help="how many best trials (default: 3)")
    confirm.add_argument("--seeds", type=int, default=5, help="new seeds per trial (default: 5)")
    confirm.add_argument("--first-seed", type=int, default=1000, help="seeds count up from here")
    confirm.add_argument("--out", help="output folder (default: confirm_<study> beside the study)")


def run(args: argparse.Namespace) -> int:
    """Re-run a study's top-k feasible configurations on new seeds; print, write the summary."""
    import optuna

    from kdprune.app import run
    from kdprune.config_checks import validate
    from kdprune.reporting.study import _open, _study_name
    from kdprune.sweeping import confirm as c

    if args.top < 1 or args.seeds < c.MIN_SEEDS:
        raise KdpruneError(f"--top must be >= 1 and --seeds >= {c.MIN_SEEDS} (an interval)")
    storage = _open(args.storage)
    name = _study_name(storage, args.storage, args.study)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plan = c.candidates(optuna.load_study(study_name=name, storage=storage), args.top)
    used = {p.search_seed for p in plan if p.search_seed is not None}
    seeds = c.new_seeds(args.seeds, args.first_seed, used)
    for candidate in plan:  # every configuration checked before the first run trains
        validate(c.compose_candidate(candidate, seeds[0]))
    db = sqlite_file(args.storage) or journal_file(args.storage)
    out = Path(args.out) if args.out else (db.parent if db else Path.cwd()) / f"confirm_{name}"
    runs = c.confirm_runs(plan, seeds, out, run, print)
    summary = c.summarise(runs)
    text = c.markdown(summary, name, seeds)
    print(text, end="")
    for path in c.write_confirm(runs, summary, out, text):
        print(f"wrote {path}")
    return 0
