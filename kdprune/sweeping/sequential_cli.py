"""`kdprune verdict --until-decided [overrides]`: its options, its checks (one line, exit 2,
before any run) and the run: looks of seeds, then the report with the sequential verdicts."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kdprune.errors import KdpruneError
from kdprune.sweeping.design import BATCH, CAP, SPENDING_NAMES, START

DEFAULT_DIR = "outputs/sweeps/{name}/sequential"


def add_parser(sub: Any, verdict_options: Any) -> None:
    """The `verdict` subcommand's options (the report's verdict options included)."""
    verdict = sub.add_parser(
        "verdict",
        help="run a grid sweep's seeds in batches until every verdict is decided (or a cap); "
        "N workers: the same command with the same --dir, N times",
        description="Run the sweep's arms seed batch by seed batch until every contrast is "
        "decided (A better, B better, equivalent within the margin) or the cap; alpha spent "
        "over the looks (Lan-DeMets), Holm within each family. Re-running continues. Workers: "
        "start the same command with the same --dir N times (on one machine or several that "
        "share the folder) and they split the runs through file locks in it, never run one "
        "twice, and all reach the same decisions and report; no option needed.",
    )
    verdict.add_argument("overrides", nargs="*", help="e.g. +sweep=orders prune_method.ratio=0.5")
    verdict.add_argument(
        "--until-decided", action="store_true", help="the sequential mode (the only one)"
    )
    verdict.add_argument("--start", type=int, default=START, help=f"seeds at look 1 ({START})")
    verdict.add_argument("--batch", type=int, default=BATCH, help=f"seeds per look ({BATCH})")
    verdict.add_argument("--cap", type=int, default=CAP, help=f"most seeds per arm ({CAP})")
    verdict.add_argument(
        "--spending", choices=SPENDING_NAMES, default="obrien-fleming",
        help="Lan-DeMets alpha-spending function (default obrien-fleming)",
    )  # fmt: skip
    verdict.add_argument(
        "--dir",
        help="the runs' folder (default outputs/sweeps/NAME/sequential); every worker of one "
        "study is started with the same one",
    )
    verdict_options(verdict)
    # The paired test's seeds are the contrast's own: a look's data for an undecided contrast
    # do not depend on which other contrasts stopped (the blocked model's residual df would).
    verdict.set_defaults(analysis="paired")


def _grid(overrides: list[str]) -> tuple[list[str], dict[str, str], str]:
    """The fixed overrides, the grid (config's sweeper params, command-line lists winning) and
    the sweep's name; a one-line error for a sweep that is not a grid or has one arm."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from kdprune.errors import one_line
    from kdprune.instantiation import compose_run, input_line
    from kdprune.sweeping.internals import BASIC_SWEEPER

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        fixed = [input_line(o) for o in parsed if not o.is_sweep_override()]
        cfg = compose_run(fixed, with_hydra=True)
    except Exception as err:  # Hydra's parse and composition errors: a user's typo
        raise KdpruneError(one_line(err)) from None
    if (cfg.hydra.get("sweeper") or {}).get("_target_") != BASIC_SWEEPER:
        raise KdpruneError("verdict --until-decided needs a grid sweep, e.g. +sweep=orders.")
    params = {str(k): str(v) for k, v in (cfg.hydra.sweeper.get("params") or {}).items()}
    kept = []
    for o in parsed:  # the command line wins over the sweep's params, as in Hydra's sweeper
        if o.is_sweep_override():
            params[o.key_or_group] = ",".join(o.sweep_string_iterator())
        elif o.key_or_group in params:
            params[o.key_or_group] = o.get_value_element_as_str()
        else:
            kept.append(input_line(o))
    return kept, params, str(cfg.get("sweep_name") or "verdict")


def distinct_arms(fixed: list[str], arms: list) -> list:
    """The grid's arms with one per configuration: an arm whose composed config is another's
    as identity sees it (e.g. `kd=none` under a second teacher: the run does not use it) is
    the same evidence, so it is left out and the first one's runs serve both."""
    from kdprune.instantiation import compose_run, config_dict
    from kdprune.reporting.config_groups import effective_config
    from kdprune.results import config_fingerprint

    seen: dict[str, object] = {}
    for arm in arms:
        config = config_dict(compose_run([*fixed, *arm.overrides]), resolve=False)
        seen.setdefault(config_fingerprint(effective_config(config, {})), arm)
    return list(seen.values())


def _validate(overrides: list[str], arm: str) -> None:
    """Compose one arm's run and check it as `kdprune` checks a run (one line on error, naming
    the arm)."""
    from omegaconf import open_dict

    from kdprune.config_checks import validate
    from kdprune.errors import one_line
    from kdprune.instantiation import compose_run, trusted

    try:
        cfg = compose_run(overrides)
        with open_dict(cfg), trusted(cfg.get("trusted_targets") or ()):
            validate(cfg)
    except KdpruneError as err:
        raise KdpruneError(f"arm {arm}: {err}") from None
    except Exception as err:  # Hydra's parse and composition errors: a user's typo
        raise KdpruneError(f"arm {arm}: {one_line(err)}") from None


def _check(args: argparse.Namespace) -> None:
    """One-line refusals of the options, before any run."""
    if not args.until_decided:
        raise KdpruneError("verdict needs --until-decided (the sequential mode, the only one).")
    if not 2 <= args.start <= args.cap or args.batch < 1:
        raise KdpruneError(
            f"need 2 <= --start <= --cap and --batch >= 1, got start {args.start}, "
            f"batch {args.batch}, cap {args.cap}."
        )


def run(args: argparse.Namespace, make_launcher: Any = None) -> int:
    """The command: check, run the looks, write the report; print the sequential verdicts.
    `make_launcher(fixed_overrides)` gives the launcher (default: Hydra multiruns)."""
    from kdprune.reporting.sequential import planned_looks
    from kdprune.reporting.verdicts import Options
    from kdprune.sweeping.until_decided import Plan, grid_arms, hydra_launcher, until_decided

    _check(args)
    fixed, params, name = _grid(list(args.overrides))
    arms = distinct_arms(fixed, grid_arms(params))
    if len(arms) < 2:
        raise KdpruneError("the sweep's grid has one configuration: nothing to compare.")
    for arm in arms:  # every arm before any run; the checks share their pruning searches
        _validate([*fixed, *arm.overrides], arm.name)
    folder = Path(args.dir or DEFAULT_DIR.format(name=name))
    folder.mkdir(parents=True, exist_ok=True)
    options = Options(args.correction, args.margin / 100, args.analysis, args.family)
    plan = Plan(planned_looks(args.start, args.batch, args.cap), args.spending, options)
    outcome = until_decided(folder, arms, plan, (make_launcher or hydra_launcher)(fixed))
    return _finish(folder, arms, plan, outcome)


def _finish(folder: Path, arms: list, plan: Any, outcome: Any) -> int:
    """The report on the runs of the last look, with the sequential verdicts added."""
    import pandas as pd

    from kdprune.reporting import write_report
    from kdprune.reporting.report import MARKDOWN_FILE
    from kdprune.reporting.sequential_report import section, with_decisions, write_sequential
    from kdprune.sweeping.claims import report_lock
    from kdprune.sweeping.until_decided import look_runs

    n = plan.looks[outcome.looks_run - 1]
    runs = look_runs(folder, arms, n)
    if runs is None:
        raise KdpruneError(f"no finished run in {folder} to report on")
    with report_lock(folder):  # other workers write the same files: one at a time
        report = write_report(runs, folder, source=str(folder), options=plan.options)
        table = with_decisions(report.verdicts, outcome.decisions, plan.spending, plan.looks)
        text = section(table, report.titles, plan.looks, plan.alphas, plan.spending)
        files = write_sequential(table, folder, folder / MARKDOWN_FILE, text)
    failed = f", {len(outcome.failed)} failed" if outcome.failed else ""
    print(
        f"{len(runs)} runs in {folder} ({len(outcome.launched)} launched by this worker{failed}, "
        f"the rest reused or run by others), {outcome.looks_run} look(s), up to {n} seeds per arm"
    )
    for _, r in table.iterrows():
        look = r["decided_at_look"]
        when = "" if pd.isna(look) else f"look {look}, n = {r['seeds_needed']}"
        print(f"  {report.titles.get(r['pairing_key'], '')}: {r['a']} vs {r['b']}: "
              f"{r['sequential_verdict']}" + (f" ({when})" if when else ""))  # fmt: skip
    for path in {*report.files, *files}:
        print(f"wrote {path}")
    return 0
