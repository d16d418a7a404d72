"""What `kdprune sensitivity` writes: sensitivity.csv, sensitivity.png and the ratio file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from kdprune.pruning.layer_ratios import write_layer_ratios
from kdprune.reporting.plots import save_figure
from kdprune.results import atomic_write
from kdprune.run_record import VAL_ACC
from kdprune.sensitivity.allocation import Allocation

CSV_FILE = "sensitivity.csv"
PLOT_FILE = "sensitivity.png"
RATIOS_FILE = "layer_ratios.yaml"


def write_table(table: pd.DataFrame, path: Path) -> Path:
    """sensitivity.csv: one row per (group, ratio)."""
    text = table.to_csv(index=False)
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def _legend(table: pd.DataFrame, group: str) -> str:
    layers = table.loc[table["group"] == group, "layers"].iloc[0]
    coupled = sum(1 for part in layers.split(", ") if part.endswith("(out)")) - 1
    return group + (f" (+{coupled} coupled)" if coupled > 0 else "")


def plot_table(table: pd.DataFrame, path: Path, title: str = "") -> Path:
    """sensitivity.png: validation accuracy against the ratio, one curve per group."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    for group, rows in table.groupby("group", sort=False):
        rows = rows.sort_values("ratio")
        ax.plot(rows["ratio"], rows[VAL_ACC], "o-", markersize=4, label=_legend(table, group))
    ax.set_xlabel("fraction of the group's channels removed (the rest of the model whole)")
    ax.set_ylabel("validation accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, title="dependency group (root layer)", title_fontsize=8)
    ax.set_title(title or "Sensitivity of each dependency group", fontsize=11)
    return save_figure(fig, path)


def write_ratios(path: Path, allocation: Allocation, about: Mapping[str, Any]) -> Path:
    """The ratio file: where it came from, the budget, what it keeps, then `layer_ratios`."""
    facts = {
        **about,
        "budget": allocation.budget,
        "kept": allocation.count,
        "predicted_drop": round(allocation.predicted_drop, 6),
        "group_ratios": dict(allocation.group_ratios),
    }
    return write_layer_ratios(path, allocation.layer_ratios, facts)
