"""Numbers over the ledger: configurations, their mean and spread over seeds, the best per order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

# The orders in their natural sequence: tables, legends and sorting list them this way.
ORDERS = ("prune_then_distill", "distill_then_prune", "joint")
# A configuration: the runs that differ only in their seed.
CONFIG_KEYS = ["model", "dataset", "order", "kd", "method", "unit", "target_ratio"]
STAT_COLUMNS = [
    "test_acc",
    "val_acc",
    "params_removed_fraction",
    "macs_speedup",
    "cpu_speedup_bs64",
    "student_epochs",
]


def order_rank(order: str) -> str:
    """Sort key: the orders in their natural sequence first, then any other by name."""
    rank = ORDERS.index(order) if order in ORDERS else len(ORDERS)
    return f"{rank}:{order}"


def sort_runs(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sort by `by`, the orders in their natural sequence (prune_then_distill first)."""

    def key(col: pd.Series) -> pd.Series:
        return col.map(order_rank) if col.name == "order" else col

    return df.sort_values(by, key=key, kind="stable", na_position="last").reset_index(drop=True)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over seeds of the report's metrics, one row per configuration."""
    grouped = runs.groupby(CONFIG_KEYS, dropna=False, sort=True)
    out = grouped[STAT_COLUMNS].agg(["mean", "std"])
    out.columns = [f"{c}_{s}" for c, s in out.columns]
    out["n_seeds"] = grouped.size()
    out["seeds"] = grouped["seed"].agg(lambda s: ", ".join(str(int(v)) for v in s.dropna()))
    return sort_runs(out.reset_index(), CONFIG_KEYS)


def best_per_order(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, order): the configuration with the highest mean val_acc.

    Ties go to the one that removed more parameters. Test accuracy plays no part.
    """
    ranked = summary.sort_values(
        ["val_acc_mean", "params_removed_fraction_mean"], ascending=False, kind="stable"
    )
    best = ranked.groupby(["model", "dataset", "order"], sort=False).head(1)
    return sort_runs(best, ["model", "dataset", "order"])


def pareto_mask(x: Sequence[float], y: Sequence[float], maximise: tuple[bool, bool]) -> np.ndarray:
    """True for the points no other point dominates (at least as good on both, better on one)."""
    pts = np.column_stack([np.asarray(x, float), np.asarray(y, float)])
    pts = pts * np.where(maximise, 1.0, -1.0)  # make both objectives "larger is better"
    keep = np.ones(len(pts), dtype=bool)
    for i, p in enumerate(pts):
        dominated = np.all(pts >= p, axis=1) & np.any(pts > p, axis=1)
        keep[i] = not dominated.any()
    return keep
