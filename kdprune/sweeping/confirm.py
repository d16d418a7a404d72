"""`kdprune confirm`: re-run the top-k configurations of a study on new seeds, with intervals.

A study's best trial is the maximum of its trials' single-seed validation scores: an optimistic
estimate of its configuration (what won may have drawn a lucky seed). Confirming re-runs each of
the k best feasible complete trials (by objective value, as `best_trials` ranks them) with the
overrides of its own job (`.hydra/overrides.yaml` in its run folder) and `seed=s` for `--seeds`
new seeds — seeds none of these trials used in the search; data_seed, split_seed and the
teacher's seed follow `seed` unless the sweep pinned them. Runs go one after another in this
process, each in `<out>/trial_<n>/seed_<s>/`; a run whose metrics.json exists is read, not re-run
(a stopped confirm resumes).

Writes `confirm_runs.csv` (one row per run) and `confirm.csv` / `confirm.md` (per configuration:
the search's value, the mean validation and test accuracy over the new seeds with 95% Student t
intervals from scipy.stats, n), ranked by mean validation accuracy: validation picks, test reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from kdprune.errors import ConfigError
from kdprune.results import METRICS_FILE, read_metrics, write_text
from kdprune.run_record import MACS_SPEEDUP, SEED, TEST_ACC, VAL_ACC

SEED_KEYS = ("seed", "data_seed", "split_seed")  # overrides of the job that confirm replaces
MIN_SEEDS = 2  # an interval needs two; the design asks for >= 5 (the default)


@dataclass(frozen=True)
class Candidate:
    """One configuration to confirm: its trial, the search's value and the job's overrides."""

    number: int
    value: float
    overrides: list[str]
    search_seed: int | None


def job_overrides(run_dir: Path) -> list[str]:
    """The overrides a trial's job ran with, minus its seeds; ConfigError if Hydra kept none."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        raise ConfigError(f"no {path}: confirm re-runs a trial from the overrides Hydra saved")
    overrides = [str(o) for o in OmegaConf.load(path)]
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in SEED_KEYS]


def candidates(study: Any, top: int) -> list[Candidate]:
    """The `top` best feasible complete trials of a single-objective study, best first."""
    from kdprune.sweeping.constraints import best_trials, is_feasible

    if len(study.directions) != 1:
        raise ConfigError("confirm re-runs the best trials of a single-objective study")
    if not best_trials(study):
        raise ConfigError(f"study {study.study_name} has no feasible complete trial to confirm")
    sign = 1.0 if study.directions[0].name == "MAXIMIZE" else -1.0
    complete = [  # a pruned trial has a value too (its last report): never a candidate
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_feasible(t)
    ]
    ranked = sorted(complete, key=lambda t: -sign * t.value)[:top]
    out = []
    for t in ranked:
        run_dir = Path(str(t.user_attrs.get("run_dir", "")))
        if not (run_dir / METRICS_FILE).is_file():
            raise ConfigError(f"trial {t.number} has no run folder with a {METRICS_FILE}")
        seed = read_metrics(run_dir).get(SEED)
        out.append(Candidate(t.number, float(t.value), job_overrides(run_dir), seed))
    return out


def new_seeds(count: int, first: int, used: set[int]) -> list[int]:
    """`count` seeds from `first` on that the study never used."""
    seeds: list[int] = []
    s = first
    while len(seeds) < count:
        if s not in used:
            seeds.append(s)
        s += 1
    return seeds


def compose_candidate(candidate: Candidate, seed: int) -> DictConfig:
    """The trial's run config with a new seed (composed as `kdprune` would, Hydra aside)."""
    from kdprune.instantiation import compose_run

    return compose_run([*candidate.overrides, f"seed={seed}"])


RunFn = Callable[[DictConfig, Path], dict[str, Any]]


def confirm_runs(
    plan: list[Candidate], seeds: list[int], out: Path, run: RunFn, say: Callable[[str], None]
) -> pd.DataFrame:
    """Run (or read) every candidate on every seed; one row per run."""
    rows = []
    for c in plan:
        for seed in seeds:
            folder = out / f"trial_{c.number}" / f"seed_{seed}"
            done = (folder / METRICS_FILE).is_file()
            metrics = read_metrics(folder) if done else run(compose_candidate(c, seed), folder)
            say(f"trial {c.number} seed {seed}: val_acc {metrics[VAL_ACC]:.4f}"
                f"{' (done before)' if done else ''}")  # fmt: skip
            rows.append({"trial": c.number, "search_value": c.value, "seed": seed,
                         VAL_ACC: metrics[VAL_ACC], TEST_ACC: metrics[TEST_ACC],
                         MACS_SPEEDUP: metrics.get(MACS_SPEEDUP),
                         "run_dir": str(folder)})  # fmt: skip
    return pd.DataFrame(rows)


def t_interval(values: pd.Series, level: float = 0.95) -> tuple[float, float]:
    """A Student t interval of the mean (scipy.stats); NaN where fewer than two values."""
    from scipy import stats

    x = values.dropna().to_numpy(dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    if x.std() == 0:
        return float(x.mean()), float(x.mean())
    low, high = stats.ttest_1samp(x, 0.0).confidence_interval(level)
    return float(low), float(high)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: search value, mean and 95% interval of val and test accuracy, n."""
    rows = []
    for trial, group in runs.groupby("trial", sort=False):
        row: dict[str, Any] = {"trial": trial, "search_value": group["search_value"].iloc[0]}
        for metric in (VAL_ACC, TEST_ACC):
            low, high = t_interval(group[metric])
            row |= {metric: group[metric].mean(), f"{metric}_low": low, f"{metric}_high": high}
        rows.append({**row, "n": int(group[VAL_ACC].notna().sum())})
    return pd.DataFrame(rows).sort_values(VAL_ACC, ascending=False).reset_index(drop=True)


def markdown(summary: pd.DataFrame, study: str, seeds: list[int]) -> str:
    """confirm.md: the table, ranked by confirmed validation accuracy."""
    lines = [
        f"# Confirmed: the top {len(summary)} configurations of study {study}",
        "",
        f"Each re-run on seeds {', '.join(map(str, seeds))} (new: the search ran these "
        "configurations on other seeds). Mean over "
        "seeds with a 95% Student t interval (scipy.stats); ranked by validation accuracy, test "
        "reported only. `search` is the trial's single-seed value in the study.",
        "",
        "| rank | trial | search | val_acc [95% CI] | test_acc [95% CI] | n |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in summary.iterrows():
        val = f"{r.val_acc:.4f} [{r.val_acc_low:.4f}, {r.val_acc_high:.4f}]"
        test = f"{r.test_acc:.4f} [{r.test_acc_low:.4f}, {r.test_acc_high:.4f}]"
        rank, trial, n = i + 1, int(r.trial), int(r.n)
        lines.append(f"| {rank} | {trial} | {r.search_value:.4f} | {val} | {test} | {n} |")
    return "\n".join(lines) + "\n"


def write_confirm(runs: pd.DataFrame, summary: pd.DataFrame, out: Path, text: str) -> list[Path]:
    """The three files, each written atomically."""
    files = [
        (out / "confirm_runs.csv", runs.to_csv(index=False)),
        (out / "confirm.csv", summary.to_csv(index=False)),
        (out / "confirm.md", text),
    ]
    return [write_text(path, body) for path, body in files]
