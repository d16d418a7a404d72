"""Did the compared runs have equal budgets? The same starting weights (metrics.json
`start.weights`, per seed), the same epochs (`epochs.inherited`, `epochs.student`), the same
number of learning-rate cycles (stages in `history`: each starts a fresh optimizer and
schedule), the same optimizer resets inside stages, the same epoch selection (`select_epoch`)
and the same stages able to use it, within every compared group; otherwise
what differs, in words. What metrics.json does not record is said to be not recorded
(NOT_RECORDED), never equal."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from kdprune.reporting.verdicts import side_labels
from kdprune.run_record import CONFIG_FINGERPRINT

# Facts about a budget that runs written before kdprune recorded them lack: the report names
# them for those runs, it does not judge them.
NOT_RECORDED = (
    "optimizer resets inside a stage (e.g. a rebuilt optimizer at each pruning step) and "
    "whether each stage could select its epoch are not recorded by {n} run(s) (written before "
    "metrics.json's history held `optimizer_resets` and `selectable`)"
)
STARTS = {
    "teacher": "from the teacher's weights",
    "trained": "from trained weights",
    "scratch": "from scratch",
    "checkpoint": "from a checkpoint",
}


@dataclass
class BudgetCheck:
    """Per pairing group, the sentences that say what differs (none: equal budgets)."""

    differences: dict[str, list[str]] = field(default_factory=dict)
    unrecorded: int = 0  # runs without `start.weights` or `epochs.student`
    epochs: set[tuple[Any, Any]] = field(default_factory=set)  # (inherited, student) seen
    cycles: set[Any] = field(default_factory=set)  # learning-rate cycles seen
    selection: set[str] = field(default_factory=set)  # select_epoch values seen
    resets: set[str] = field(default_factory=set)  # optimizer resets inside stages seen
    selecting: set[str] = field(default_factory=set)  # stages able to select their epoch seen
    unrecorded_schedule: int = 0  # runs without optimizer_resets / selecting_stages

    @property
    def equal(self) -> bool:
        """Every run recorded its start and epochs, and no compared group differs."""
        return self.unrecorded == 0 and not any(self.differences.values())


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value: Any) -> Any:
    return None if _missing(value) else int(value)


def _inherited(row: pd.Series) -> Any:
    """Epochs that shaped the starting weights: `epochs.inherited`, else those in `start`."""
    value = row.get("epochs_inherited")
    return _number(row.get("start_inherited_epochs") if _missing(value) else value)


def _start_phrase(init: Any, inherited: Any) -> str:
    phrase = STARTS.get(str(init), f"from {init}")
    if inherited:
        phrase += f" ({inherited} inherited epoch{'s' if inherited != 1 else ''})"
    return phrase


def _joined(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _grouped(phrases: dict[str, str], verb: str = "") -> str:
    """'A <verb> X, B and C Y': configurations grouped by what they did, in first-seen order."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for name, phrase in phrases.items():
        grouped[phrase].append(name)
    parts = [f"{_joined(names)} {phrase}" for phrase, names in grouped.items()]
    if verb:
        names, phrase = next(iter(grouped.values())), next(iter(grouped))
        parts[0] = f"{_joined(names)} {verb} {phrase}"
    return ", ".join(parts)


def _phrases(runs: pd.DataFrame, group: pd.DataFrame, describe: Any) -> dict[str, str]:
    """What each configuration did (its runs' phrases joined with ' / '), named by its order
    alone where every configuration of that order did the same, else by its full label."""
    names = side_labels(group)
    orders = group.set_index(CONFIG_FINGERPRINT)["order"]
    per_config = {}
    for fingerprint, members in runs.groupby(CONFIG_FINGERPRINT, sort=False):
        seen = dict.fromkeys(describe(row) for _, row in members.iterrows())
        per_config[fingerprint] = " / ".join(seen)
    out = {}
    for order in dict.fromkeys(orders[list(per_config)]):
        mine = {f: p for f, p in per_config.items() if orders[f] == order}
        if len(set(mine.values())) == 1:
            out[f"`{order}`"] = next(iter(mine.values()))
        else:
            out.update({f"`{names[f]}`": p for f, p in mine.items()})
    return out


def _weights_sentence(runs: pd.DataFrame) -> str | None:
    """Seeds whose runs started from different weights although they start the same way."""
    seeds = []
    for seed, group in runs.groupby("seed", sort=True):
        if group["start_init"].nunique() == 1 and group["start_weights"].nunique() > 1:
            seeds.append(str(int(seed)) if seed == seed else "?")
    if not seeds:
        return None
    which = "seed" if len(seeds) == 1 else "seeds"
    return f"{which} {', '.join(seeds)}: the runs started the same way but from different weights"


def _group_differences(runs: pd.DataFrame, group: pd.DataFrame) -> list[str]:
    """What differs in one pairing group's starting points and epochs, in sentences."""
    recorded = runs.dropna(subset=["start_weights", "epochs_student"])
    out = []
    starts = _phrases(recorded, group, lambda r: _start_phrase(r["start_init"], _inherited(r)))
    if len(set(starts.values())) > 1:
        out.append(_grouped(starts, "started"))
    epochs = _phrases(recorded, group, lambda r: str(_number(r["epochs_student"])))
    if len(set(epochs.values())) > 1:
        out.append("epochs on the student: " + _grouped(epochs))
    weights = _weights_sentence(recorded)
    return out + ([weights] if weights else []) + _schedule_differences(runs, group)


def _schedule_differences(runs: pd.DataFrame, group: pd.DataFrame) -> list[str]:
    """Learning-rate cycles and epoch selection that differ within one pairing group."""
    out = []
    cycles = _phrases(runs, group, lambda r: _recorded(_number(r.get("lr_cycles"))))
    if len(set(cycles.values())) > 1:
        out.append(
            "learning-rate cycles (a fresh optimizer and schedule per stage): " + _grouped(cycles)
        )
    selection = _phrases(runs, group, lambda r: _recorded(r.get("select_epoch")))
    if len(set(selection.values())) > 1:
        out.append("epoch selection (`select_epoch`): " + _grouped(selection))
    resets = _phrases(runs, group, lambda r: _recorded(_number(r.get("optimizer_resets"))))
    if len(set(resets.values())) > 1:
        out.append("optimizers rebuilt inside a stage (after a pruning step): " + _grouped(resets))
    selecting = _phrases(runs, group, lambda r: _recorded(_number(r.get("selecting_stages"))))
    if len(set(selecting.values())) > 1:
        out.append("stages that could keep their best validation epoch: " + _grouped(selecting))
    return out


def _recorded(value: Any) -> str:
    return "not recorded" if _missing(value) else str(value)


def check_budgets(runs: pd.DataFrame, summary: pd.DataFrame) -> BudgetCheck:
    """Compare starting points and epochs within each pairing group (and seed, for weights)."""
    check = BudgetCheck()
    unrecorded = runs["start_weights"].isna() | runs["epochs_student"].isna()
    check.unrecorded = int(unrecorded.sum())
    for key, group in summary.groupby("pairing_key", sort=False):
        members = runs[runs["pairing_key"] == key]
        check.differences[key] = _group_differences(members, group)
    recorded = runs[~unrecorded]
    check.epochs = {(_inherited(r), _number(r["epochs_student"])) for _, r in recorded.iterrows()}
    check.cycles = {_recorded(_number(c)) for c in runs.get("lr_cycles", [])}
    check.selection = {_recorded(v) for v in runs["select_epoch"]}
    resets = runs.get("optimizer_resets", pd.Series(None, index=runs.index, dtype=object))
    selecting = runs.get("selecting_stages", pd.Series(None, index=runs.index, dtype=object))
    check.resets = {_recorded(_number(v)) for v in resets}
    check.selecting = {_recorded(_number(v)) for v in selecting}
    check.unrecorded_schedule = int((resets.isna() | selecting.isna()).sum())
    return check
