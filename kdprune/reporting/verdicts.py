"""The paired verdict: within a compression level, each pair of orders and KD vs no KD (or,
with `compare`, each pair of values of one config group such as the pruning method), compared
seed by seed on test accuracy with a paired t interval.

A pairing group is the runs of one `pairing_key` (same model, data, method, target, budget,
starting point ... ; only the order and KD differ). Within it, a run of seed s on one side is
paired with the run of seed s on the other: the same seed gives both the same teacher, data
split and initialisation. Only seeds present on both sides count; duplicate runs of a seed are
averaged first (`statistics.per_seed`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import pandas as pd

from kdprune.reporting.configs import NO_KD, ORDERS_AND_KD, labels
from kdprune.reporting.statistics import CONFIDENCE, MATCHED_MACS, order_rank, per_seed, t_interval
from kdprune.results import atomic_write

VERDICTS_FILE = "verdicts.csv"
INTERVAL = f"paired t, {CONFIDENCE:.0%}"
A_BETTER, B_BETTER = "A better", "B better"
COLUMNS = [
    "pairing_key", "model", "dataset", "method", "unit", "target_ratio", "kind", "a", "b",
    "n", "seeds", "mean_diff", "std_diff", "ci_low", "ci_high", "interval", "verdict",
    "verdict_text", "a_test_acc", "b_test_acc", "a_macs_speedup", "b_macs_speedup",
    "a_sparsity", "b_sparsity", "macs_gap", "matched", "a_fingerprint", "b_fingerprint",
]  # fmt: skip


@dataclass(frozen=True)
class Paired:
    """Differences A - B over the seeds both sides have: their mean, std and t interval."""

    n: int
    seeds: tuple[Any, ...]
    mean: float
    std: float
    low: float
    high: float


def paired_difference(a: Mapping[Any, float], b: Mapping[Any, float]) -> Paired:
    """A - B per shared seed (keys), with the paired t interval of its mean."""
    shared = tuple(sorted(set(a) & set(b)))
    mean, std, low, high = t_interval([a[s] - b[s] for s in shared])
    return Paired(len(shared), shared, mean, std, low, high)


def verdict(n: int, low: float, high: float) -> str:
    """ "A better" when the interval lies above 0, "B better" below, else no difference."""
    if n == 0:
        return "no shared seed"
    if n == 1 or math.isnan(low) or math.isnan(high):
        return "n = 1: no interval" if n == 1 else f"no interval at n = {n}"
    if low > 0:
        return A_BETTER
    if high < 0:
        return B_BETTER
    return f"no difference detected at n = {n}"


def _pairs(
    group: pd.DataFrame, compare: str = ORDERS_AND_KD, names: dict[str, str] | None = None
) -> list[tuple[str, pd.Series, pd.Series]]:
    """(kind, A, B): orders with the same KD (A the earlier order); KD vs none per schedule.
    Comparing a config group instead: every two configurations (A first by label)."""
    if compare != ORDERS_AND_KD:
        rows = sorted((r for _, r in group.iterrows()), key=lambda r: names[r.config_fingerprint])
        return [(compare, a, b) for a, b in combinations(rows, 2)]
    out = []
    for (_, x), (_, y) in combinations(group.iterrows(), 2):
        if x["kd_key"] == y["kd_key"] and x["order"] != y["order"]:
            a, b = sorted((x, y), key=lambda r: order_rank(r["order"]))
            out.append(("orders", a, b))
        elif x["schedule_key"] == y["schedule_key"] and (x["kd"] == NO_KD) != (y["kd"] == NO_KD):
            a, b = (y, x) if x["kd"] == NO_KD else (x, y)
            out.append(("kd", a, b))
    return out


def _seed(seed: Any) -> str:
    return str(int(seed)) if isinstance(seed, int | float) and seed == seed else str(seed)


def _side_means(values: pd.DataFrame, fingerprint: str, seeds: tuple) -> dict[str, float]:
    """Mean test accuracy, MACs speed-up and sparsity of one side over the shared seeds."""
    rows = values.loc[fingerprint].loc[list(seeds)] if seeds else values.loc[fingerprint]
    return {k: float(rows[k].mean()) for k in ("test_acc", "macs_speedup", "weight_sparsity")}


def _comparison(
    kind: str, a: pd.Series, b: pd.Series, values: pd.DataFrame, names: dict[str, str]
) -> dict[str, Any]:
    """One row of the verdict table."""
    fa, fb = a["config_fingerprint"], b["config_fingerprint"]
    paired = paired_difference(
        values.loc[fa, "test_acc"].to_dict(), values.loc[fb, "test_acc"].to_dict()
    )
    side_a, side_b = _side_means(values, fa, paired.seeds), _side_means(values, fb, paired.seeds)
    gap = (
        max(side_a["macs_speedup"], side_b["macs_speedup"])
        / min(side_a["macs_speedup"], side_b["macs_speedup"])
        - 1
    )
    said = verdict(paired.n, paired.low, paired.high)
    text = {A_BETTER: f"{names[fa]} better", B_BETTER: f"{names[fb]} better"}.get(said, said)
    row = {k: a[k] for k in ("pairing_key", "model", "dataset", "method", "unit", "target_ratio")}
    return {
        **row,
        "kind": kind,
        "a": names[fa],
        "b": names[fb],
        "n": paired.n,
        "seeds": ", ".join(_seed(s) for s in paired.seeds),
        "mean_diff": paired.mean,
        "std_diff": paired.std,
        "ci_low": paired.low,
        "ci_high": paired.high,
        "interval": INTERVAL,
        "verdict": said,
        "verdict_text": text,
        **{f"a_{k}" if k != "weight_sparsity" else "a_sparsity": v for k, v in side_a.items()},
        **{f"b_{k}" if k != "weight_sparsity" else "b_sparsity": v for k, v in side_b.items()},
        "macs_gap": gap,
        "matched": bool(gap <= MATCHED_MACS) if not math.isnan(gap) else None,
        "a_fingerprint": fa,
        "b_fingerprint": fb,
    }


def side_labels(group: pd.DataFrame, compare: str = ORDERS_AND_KD) -> dict[str, str]:
    """Labels of a pairing group's configurations: order and KD (or the compared group's
    name), plus whatever else differs."""
    configs = {r["config_fingerprint"]: json.loads(r["config_json"]) for _, r in group.iterrows()}
    always = ("schedule.name", "kd.name") if compare == ORDERS_AND_KD else (f"{compare}.name",)
    return labels(configs, always=always)


def verdicts(
    runs: pd.DataFrame, summary: pd.DataFrame, compare: str = ORDERS_AND_KD
) -> pd.DataFrame:
    """Every comparison of every pairing group, one row each (COLUMNS), in report order:
    between orders and KD on / off, or between the values of the `compare` config group."""
    values = per_seed(runs).set_index(["config_fingerprint", "seed"]).sort_index()
    rows = []
    for _, group in summary.groupby("level_rank", sort=True):
        names = side_labels(group, compare)
        pairs = _pairs(group, compare, names)
        rows += [_comparison(kind, a, b, values, names) for kind, a, b in pairs]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    kinds = {"orders": 0, "kd": 1}
    frame["_rank"] = frame["kind"].map(kinds)
    ranks = summary.drop_duplicates("pairing_key").set_index("pairing_key")["level_rank"]
    frame["_level"] = frame["pairing_key"].map(ranks)
    return frame.sort_values(["_level", "_rank"], kind="stable").drop(columns=["_rank", "_level"])


def write_verdicts(table: pd.DataFrame, path: Path) -> Path:
    """verdicts.csv: one row per comparison (COLUMNS)."""
    text = table.to_csv(index=False)
    return atomic_write(path, lambda fh: fh.write(text.encode()))
