"""verdicts.png: each comparison's estimated difference with the 95% interval of the analysis
its verdict uses (verdicts.csv `interval`), and zero."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from kdprune.reporting.inference import EQUIVALENT
from kdprune.reporting.plots import save_figure
from kdprune.reporting.verdicts import A_BETTER, B_BETTER, unmatched

VERDICTS_PLOT = "verdicts.png"
COLOURS = {A_BETTER: "tab:blue", B_BETTER: "tab:red"}
EQUIVALENT_COLOUR = "tab:green"
UNDECIDED = "0.45"
LABEL_WIDTH = 60  # characters per line of a row's label: long labels wrap, the plot keeps room


def _row_label(row: pd.Series, title: str) -> str:
    return textwrap.fill(f"{title}: {row['a']}  −  {row['b']}{unmatched(row)}", LABEL_WIDTH)


def plot_verdicts(table: pd.DataFrame, titles: dict[str, str], path: Path) -> Path:
    """A row per comparison: the estimate of A − B (test accuracy, paired by seed) and the 95%
    interval its verdict uses as a horizontal bar; blue when A is better, red when B is, green
    when equivalent, grey when undecided; a hollow marker where there is no interval."""
    labels = [_row_label(r, titles.get(r["pairing_key"], "")) for _, r in table.iterrows()]
    lines = sum(label.count("\n") + 1 for label in labels)
    fig = Figure(figsize=(11, 1.6 + 0.3 * lines + 0.12 * len(table)), layout="constrained")
    ax = fig.add_subplot()
    ys = list(range(len(table)))[::-1]
    previous = None
    for y, (_, row) in zip(ys, table.iterrows(), strict=True):
        colour = COLOURS.get(row["verdict"], UNDECIDED)
        if str(row["verdict"]).startswith(EQUIVALENT):
            colour = EQUIVALENT_COLOUR
        low, high, mean = row["ci_low"], row["ci_high"], row["mean_diff"]
        if row["analysis"] == "blocked" and row["blocked_mean"] == row["blocked_mean"]:
            mean = row["blocked_mean"]
        if math.isnan(low):
            ax.plot(mean, y, "o", markerfacecolor="white", color=colour, markersize=7)
        else:
            ax.errorbar(mean, y, xerr=[[mean - low], [high - mean]], fmt="o", color=colour,
                        capsize=4, linewidth=2, markersize=6)  # fmt: skip
        said = row["verdict_text"] + ("" if "n = " in row["verdict_text"] else f" (n = {row['n']})")
        ax.annotate(said, (1.0, y),
                    xycoords=("axes fraction", "data"), xytext=(6, 0),
                    textcoords="offset points", va="center", fontsize=8, color=colour)  # fmt: skip
        if previous is not None and row["pairing_key"] != previous:
            ax.axhline(y + 0.5, color="0.85", linewidth=1)
        previous = row["pairing_key"]
    ax.axvline(0.0, color="black", linewidth=1)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_ylim(-0.7, len(table) - 0.3)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=7))
    ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:+.1f}")
    interval = table["interval"].iloc[0] if len(table) else ""
    ax.set_xlabel(f"test accuracy of A − B in percentage points (bar: {interval} interval)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle("Paired verdicts: which side is better?", fontsize=13, fontweight="bold")
    ax.set_title("right of zero: A (left name) better; left of zero: B better", fontsize=9,
                 color="0.3")  # fmt: skip
    return save_figure(fig, path)
