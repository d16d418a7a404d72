"""`kdprune verdict --until-decided`: run a sweep's configurations (arms) seed batch by seed
batch until every contrast of the report is decided or the cap of seeds is reached
(`kdprune.reporting.sequential` holds the stopping rule).

Every (arm, seed) run lives in `FOLDER/<arm>/seed_<s>` (`kdprune.sweeping.arms`). A run whose
metrics.json says status ok is reused, so the same command run again replays the looks from the
runs already there (look k sees the seeds below n_k only) and goes on where it stopped. Only
the arms of contrasts still undecided at a look get the next look's seeds.

The same command started N times with the same folder gives N workers that split the runs
(`kdprune.sweeping.claims`: a file lock per run): each decides a look only once every run the
look needs is finished or failed, so all of them see the same runs and reach the same decisions.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from kdprune.errors import ConfigError
from kdprune.reporting.sequential import (
    Decision,
    look_alphas,
    table_decisions,
    undecided,
)
from kdprune.results import METRICS_FILE, STATUS_OK, read_metrics, run_status
from kdprune.run_record import CONFIG_FINGERPRINT, SEED
from kdprune.sweeping.arms import CHECKED_ENV, SEED_FOLDER, Arm, Launcher
from kdprune.sweeping.claims import settle, worker_session

if TYPE_CHECKING:
    from kdprune.reporting.verdicts import Options


@dataclass(frozen=True)
class Plan:
    """The sequential design: looks (seeds per arm), alpha per look, the verdicts' options."""

    looks: list[int]
    spending: str = "obrien-fleming"
    options: Options | None = None  # None: the report's defaults

    @property
    def alphas(self) -> list[float]:
        """Each look's share of alpha (the spending function's increments)."""
        return look_alphas(self.looks, spending=self.spending)


@dataclass
class Outcome:
    """Per contrast (a_fingerprint, b_fingerprint) its decision; the looks run; the (arm,
    seed) runs this worker launched and the runs that failed (left out of the looks)."""

    decisions: dict[tuple[str, str], Decision] = field(default_factory=dict)
    looks_run: int = 0
    launched: list[tuple[str, int]] = field(default_factory=list)
    failed: list[tuple[str, int]] = field(default_factory=list)


def grid_arms(sweep_params: dict[str, str]) -> list[Arm]:
    """The arms of a sweep's grid (`hydra.sweeper.params`, seed left out): every combination."""
    keys = sorted(k for k in sweep_params if k != "seed")
    values = [str(sweep_params[k]).split(",") for k in keys]
    return [
        Arm(tuple(f"{k}={v.strip()}" for k, v in zip(keys, combo, strict=True)))
        for combo in itertools.product(*values)
    ]


def done_seeds(folder: Path, arm: Arm) -> set[int]:
    """The seeds of an arm whose run finished (metrics.json with status ok)."""
    out = set()
    for path in (folder / arm.name).glob(f"{SEED_FOLDER.format(seed='*')}/{METRICS_FILE}"):
        try:
            metrics = read_metrics(path)
        except (OSError, ValueError):
            continue
        if run_status(metrics) == STATUS_OK and isinstance(metrics.get(SEED), int):
            out.add(metrics[SEED])
    return out


def look_runs(folder: Path, arms: Sequence[Arm], n: int) -> pd.DataFrame | None:
    """The finished runs of these arms with a seed below n (None when there are none); runs
    of other arms left in the folder are not looked at."""
    from kdprune.reporting.runs import collect_runs

    try:
        runs = collect_runs(folder)
    except ConfigError:
        return None
    names = {a.name for a in arms}
    arm = runs["run_dir"].map(lambda d: Path(d).resolve().relative_to(folder.resolve()).parts[0])
    return runs[(runs["seed"] < n) & arm.isin(names)].reset_index(drop=True)


def _look_table(runs: pd.DataFrame, options) -> pd.DataFrame:
    """The verdicts table of the runs one look sees (no image intervals: no look reads them)."""
    from kdprune.reporting.config_groups import ORDERS_AND_KD, paired_by
    from kdprune.reporting.statistics import summarise
    from kdprune.reporting.verdicts import verdicts

    runs = paired_by(runs, ORDERS_AND_KD)
    return verdicts(runs, summarise(runs), ORDERS_AND_KD, options, images=False)


def _arm_of(runs: pd.DataFrame, folder: Path) -> dict[str, str]:
    """Each configuration fingerprint's arm folder name."""
    return {
        r[CONFIG_FINGERPRINT]: Path(r["run_dir"]).resolve().relative_to(folder.resolve()).parts[0]
        for _, r in runs.iterrows()
    }


def _settle_look(
    folder: Path, arms: Sequence[Arm], n: int, launch: Launcher, outcome: Outcome
) -> None:
    """Every listed arm's runs at the seeds below n finished or failed (run here or by another
    worker); the runs newly failed are said in one line."""
    settled = settle(folder, [(arm, range(n)) for arm in arms], launch)
    outcome.launched += settled.launched
    new = [run for run in settled.failed if run not in outcome.failed]
    if new:
        outcome.failed += new
        runs = ", ".join(f"{arm} seed {seed}" for arm, seed in new)
        print(
            f"kdprune: warning: {len(new)} run(s) failed, left out (retried when the command "
            f"next starts with no worker on {folder}): {runs}",
            file=sys.stderr,
        )


def _decide(table: pd.DataFrame, look: int, n: int, alpha: float, options, outcome) -> None:
    """Record this look's new decisions; refused pairs end at once (more seeds cannot help)."""
    words = table_decisions(table, alpha, options.margin, options.correction)
    for (_, row), word in zip(table.iterrows(), words, strict=True):
        key = (row["a_fingerprint"], row["b_fingerprint"])
        if key in outcome.decisions:
            continue
        if str(row["note"]).startswith("refused"):
            outcome.decisions[key] = Decision(row["note"], look, int(row["n"]), alpha)
        elif word is not None:
            outcome.decisions[key] = Decision(word, look, int(row["n"]), alpha)


def until_decided(folder: Path, arms: Sequence[Arm], plan: Plan, launch: Launcher) -> Outcome:
    """Run seeds look by look until every contrast is decided or the cap; returns decisions
    (undecided ones at the cap included) and what was launched. Other workers on the same
    folder share the runs; every one of them returns the same decisions."""
    from kdprune.reporting.verdicts import Options

    outcome, table = Outcome(), pd.DataFrame()
    arm_of: dict[str, str] = {}
    options = plan.options or Options()
    with worker_session(folder):
        for k, (n, alpha) in enumerate(zip(plan.looks, plan.alphas, strict=True)):
            needed = list(arms) if k == 0 else _needed(table, outcome, arm_of, arms)
            _settle_look(folder, needed, n, launch, outcome)
            runs = look_runs(folder, arms, n)
            if runs is None or runs.empty:
                raise ConfigError(f"no finished run below {folder} after look {k + 1}.")
            arm_of = _arm_of(runs, folder)
            table = _look_table(runs, options)
            _decide(table, k + 1, n, alpha, options, outcome)
            outcome.looks_run = k + 1
            if all(key in outcome.decisions for key in _pairs(table)):
                break
    for key, n_seen in zip(_pairs(table), table["n"], strict=True):
        outcome.decisions.setdefault(key, undecided(int(n_seen)))
    return outcome


def _needed(
    table: pd.DataFrame, outcome: Outcome, arm_of: dict[str, str], arms: Sequence[Arm]
) -> list[Arm]:
    """The arms of the contrasts still undecided: the ones that get the next look's seeds."""
    names = set()
    for a, b in _pairs(table):
        if (a, b) not in outcome.decisions:
            names |= {arm_of[a], arm_of[b]}
    return [arm for arm in arms if arm.name in names]


def _pairs(table: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(table["a_fingerprint"], table["b_fingerprint"], strict=True))


def hydra_launcher(base: Sequence[str]) -> Launcher:
    """A launcher that runs `kdprune -m BASE ARM seed=S1,S2,...` in a child process, each job
    in FOLDER/<arm>/seed_<s>; a failing child is reported in one line, its runs stay missing.
    The child holds the runs' locks with its worker."""

    def launch(arm: Arm, seeds: Sequence[int], folder: Path) -> None:
        command = [
            sys.executable, "-m", "kdprune", "-m", *base, *arm.overrides,
            f"seed={','.join(str(s) for s in seeds)}",
            f"hydra.sweep.dir={folder / arm.name}", "hydra.sweep.subdir=seed_${seed}",
        ]  # fmt: skip
        # close_fds=False: the child inherits the claimed runs' lock descriptors (claims.Flock
        # makes them inheritable while held), so the runs stay locked until it exits even if
        # this worker is killed alone.
        # The verdict checked every arm before its first look: the child skips the command
        # line's check (each job still checks its own config before it trains).
        env = {**os.environ, CHECKED_ENV: "verdict"}
        done = subprocess.run(command, check=False, close_fds=False, env=env)
        if done.returncode != 0:
            print(
                f"kdprune: warning: {arm.name} seeds {seeds} exited {done.returncode}",
                file=sys.stderr,
            )

    return launch
