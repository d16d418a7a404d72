"""The report's figures: test accuracy against achieved compression, and the Pareto front."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from kdprune.reporting.config_groups import NO_KD, series_labels
from kdprune.reporting.statistics import order_rank, pareto_mask, summarise
from kdprune.reporting.study import StudyInfo
from kdprune.results import atomic_write
from kdprune.run_record import MACS_SPEEDUP, TEACHER_TEST_ACC, TEST_ACC, VAL_ACC, WEIGHT_SPARSITY
from kdprune.schedules.names import ORDER_NAMES

X_AXES = {
    "sparsity": (
        WEIGHT_SPARSITY,
        "weight sparsity (dense weights removed or zero)",
    ),
    MACS_SPEEDUP: (MACS_SPEEDUP, "MACs speed-up (dense MACs / pruned MACs)"),
    "params_removed": ("params_removed_fraction", "parameters removed (1 − after / before)"),
    "latency_speedup": (
        "latency_speedup",
        "measured speed-up on the latency target (dense ms / pruned ms)",
    ),
}
SPEEDUP_AXES = (MACS_SPEEDUP, "latency_speedup")
AXIS_TITLES = {
    "sparsity": "weight sparsity",
    MACS_SPEEDUP: "MACs speed-up",
    "latency_speedup": "measured speed-up",
    "params_removed": "parameters removed",
}
ORDER_COLOURS = dict(zip(ORDER_NAMES, ("tab:blue", "tab:orange", "tab:green"), strict=True))
OTHER_COLOURS = ["tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
KD_STYLES = ["-", "-.", (0, (1, 1.5)), (0, (3, 1, 1, 1, 1, 1))]  # "--" is the teacher's
NO_KD_STYLE = (0, (1, 1.5))  # dotted: without distillation
TEACHER_STYLE = (0, (6, 3))
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
# Beyond these, the legend names orders only and points lose their target labels.
MAX_LEGEND_SERIES = 20
MAX_ANNOTATED_POINTS = 40
AXIS_NAMES = {
    VAL_ACC: "validation accuracy",
    TEST_ACC: "test accuracy",
    MACS_SPEEDUP: "MACs speed-up (×)",
    WEIGHT_SPARSITY: "weight sparsity (fraction)",
    "params_removed_fraction": "parameters removed (fraction)",
    "cpu_speedup_bs1": "CPU speed-up, batch 1 (×)",
    "cpu_speedup_bs64": "CPU speed-up, batch 64 (×)",
    "cpu_latency_ms_bs1_after": "CPU latency, batch 1 (ms)",
    "cpu_latency_ms_bs64_after": "CPU latency, batch 64 (ms)",
    "latency_speedup": "measured speed-up, latency target (×)",
}


def save_figure(fig: Figure, path: Path) -> Path:
    """Write the figure as a PNG at 150 dpi, atomically."""
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=150))


def accuracy_points(summary: pd.DataFrame, x_col: str) -> pd.DataFrame:
    """One point per configuration: x = mean achieved `x_col` over its seeds, y = mean test
    accuracy with its 95% t interval; `series` joins the points that differ only in target."""
    points = summary.rename(
        columns={
            f"{x_col}_mean": "x",
            "test_acc_mean": "mean",
            "test_acc_ci_low": "low",
            "test_acc_ci_high": "high",
        }
    )
    points["series"] = points["series_key"].map(series_labels(summary, ("schedule.name",)))
    return points


def _order_colours(orders: pd.Series) -> dict[str, str]:
    """A colour per order: the natural orders their own, any other the next spare colour."""
    others = iter(OTHER_COLOURS * 10)
    return {o: ORDER_COLOURS.get(o) or next(others) for o in sorted(orders.unique())}


def _style(points: pd.DataFrame) -> tuple[dict[str, str], dict[str, Any], dict[str, str]]:
    """Colour per order, dashes per KD name, marker per pruning method."""
    kds = sorted(k for k in points["kd"].unique() if k != NO_KD)
    methods = sorted(points["method"].unique())
    dashes = {k: KD_STYLES[i % len(KD_STYLES)] for i, k in enumerate(kds)} | {NO_KD: NO_KD_STYLE}
    markers = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(methods)}
    return _order_colours(points["order"]), dashes, markers


def _draw_series(ax: Axes, points: pd.DataFrame) -> None:
    """A line per series through its configurations' means, a band of their 95% intervals."""
    colours, dashes, markers = _style(points)
    groups = sorted(
        points.groupby("series_key"),
        key=lambda kg: (order_rank(kg[1]["order"].iloc[0]), kg[1]["series"].iloc[0]),
    )
    by_order = len(groups) > MAX_LEGEND_SERIES
    named: set[str] = set()
    for _, group in groups:
        group = group.sort_values("x")
        first = group.iloc[0]
        colour = colours[first["order"]]
        label = first["order"] if by_order else first["series"]
        xs, mean = group["x"].to_numpy(float), group["mean"].to_numpy(float)
        ax.plot(xs, mean, color=colour, linestyle=dashes[first["kd"]], linewidth=2,
                marker=markers[first["method"]], markersize=6,
                label=None if label in named else label)  # fmt: skip
        named.add(label)
        # An accuracy lies in [0, 1]: a few seeds' t interval can reach past it; draw it clipped
        # (the tables give it as computed).
        low = np.clip(group["low"].to_numpy(float), 0.0, 1.0)
        high = np.clip(group["high"].to_numpy(float), 0.0, 1.0)
        if np.isfinite(low).any() and len(xs) > 1:
            ax.fill_between(xs, low, high, color=colour, alpha=0.15, linewidth=0)
        elif np.isfinite(low).any():  # a band needs two points: an error bar instead
            ax.errorbar(xs, mean, yerr=[mean - low, high - mean], fmt="none", ecolor=colour,
                        alpha=0.6, capsize=3, linewidth=1)  # fmt: skip
    if len(points) <= MAX_ANNOTATED_POINTS:
        for _, p in points.iterrows():
            ax.annotate(f"{p['target_ratio']:g}", (p["x"], p["mean"]), xytext=(4, -10),
                        textcoords="offset points", fontsize=7, color="0.4")  # fmt: skip


def _draw_teachers(ax: Axes, runs: pd.DataFrame) -> pd.Series:
    """A dashed grey line at each dense teacher's test accuracy; return those by (model, data)."""
    teachers = runs.groupby(["model", "dataset"])[TEACHER_TEST_ACC].mean().dropna()
    for i, ((model, dataset), acc) in enumerate(teachers.items()):
        name = f"teacher {model} on {dataset}" if len(teachers) > 1 else "dense teacher"
        grey = str(min(0.2 + 0.2 * i, 0.7))
        ax.axhline(acc, color=grey, linestyle=TEACHER_STYLE, linewidth=1.4, zorder=1)
        ax.plot([], [], color=grey, linestyle=TEACHER_STYLE, label=f"{name} ({acc:.3f})")
    return teachers


def _label_accuracy_plot(fig: Figure, ax: Axes, x: str, n_seeds: int, teachers: pd.Series) -> None:
    """Tick format, axis labels, title (subject and seeds) and the legend beside the axes."""
    if x in SPEEDUP_AXES:
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:.1f}×")
    else:
        ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    ax.set_xlabel(X_AXES[x][1] + ", achieved (mean over seeds)")
    ax.set_ylabel("test accuracy")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.04)
    fig.suptitle(f"Test accuracy vs {AXIS_TITLES[x]}", fontsize=13, fontweight="bold")
    subject = " / ".join(f"{m} on {d}" for m, d in teachers.index) or "runs"
    note = (
        f"mean over up to {n_seeds} seeds, bands: 95% t interval"
        if n_seeds > 1
        else "one seed per point: no interval"
    )
    ax.set_title(f"{subject}; {note}; small numbers: target ratio", fontsize=9, color="0.3")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)


def plot_accuracy(
    runs: pd.DataFrame, path: Path, x: str = "sparsity", summary: pd.DataFrame | None = None
) -> Path:
    """Test accuracy against achieved sparsity, MACs speed-up or parameters removed: a point per
    configuration, a line per series, bands of 95% t intervals over seeds."""
    summary = summarise(runs) if summary is None else summary
    points = accuracy_points(summary, X_AXES[x][0])
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    ax = fig.add_subplot()
    _draw_series(ax, points)
    teachers = _draw_teachers(ax, runs)
    _label_accuracy_plot(fig, ax, x, int(points["n_seeds"].max()), teachers)
    return save_figure(fig, path)


def _pareto_axes(runs: pd.DataFrame, study: StudyInfo | None) -> tuple[str, str, bool, bool]:
    """(x column, y column, maximise x, maximise y) for the Pareto plot."""
    if study is not None and len(study.objective_names) == 2:
        cols = ["value_0", "value_1"]
        maxi = [d == "maximize" for d in study.directions]
        iy = next((i for i, n in enumerate(study.objective_names) if "acc" in n), 0)
        return cols[1 - iy], cols[iy], maxi[1 - iy], maxi[iy]
    return MACS_SPEEDUP, VAL_ACC, True, True


def _pareto_points(
    runs: pd.DataFrame, study: StudyInfo | None, x_col: str, y_col: str
) -> pd.DataFrame:
    """The points to draw: every completed trial when the study holds the x column, else runs."""
    data = runs
    if study is not None and x_col in study.trials:  # every finished trial, with metrics or not
        data = study.trials[study.trials["trial_state"] == "COMPLETE"]
    return data.dropna(subset=[x_col, y_col])


def _front_tag(row: pd.Series) -> str:
    """A Pareto point's annotation: its trial number, else its order, kd and ratio."""
    if "trial_number" in row:
        return f"#{int(row['trial_number'])}"
    return f"{row['order']}, kd={row['kd']}, ratio {row['target_ratio']:g}"


def _draw_front(
    ax: Axes, data: pd.DataFrame, front: pd.DataFrame, cols: tuple[str, str], what: str
) -> None:
    """Every point in grey, the Pareto-optimal ones in red, connected and annotated."""
    x_col, y_col = cols
    ax.scatter(data[x_col], data[y_col], color="0.65", s=28, label=f"all {what} ({len(data)})")
    ax.plot(
        front[x_col],
        front[y_col],
        color="tab:red",
        marker="o",
        markersize=8,
        linewidth=1.8,
        label=f"Pareto-optimal ({len(front)})",
    )
    for _, row in front.iterrows():
        ax.annotate(
            _front_tag(row),
            (row[x_col], row[y_col]),
            xytext=(5, 5),
            textcoords="offset points",
            fontsize=8,
        )


def _pareto_label(col: str, maximise: bool, study: StudyInfo | None) -> str:
    """An axis label: the objective's name in words and which way is better."""
    name = col
    if study is not None and col.startswith("value_"):
        name = study.objective_names[int(col.removeprefix("value_"))]
    return f"{AXIS_NAMES.get(name, name)} ({'higher' if maximise else 'lower'} is better)"


def plot_pareto(runs: pd.DataFrame, path: Path, study: StudyInfo | None = None) -> Path:
    """Accuracy vs cost of every run in grey; the Pareto-optimal ones highlighted and connected."""
    x_col, y_col, max_x, max_y = _pareto_axes(runs, study)
    data = _pareto_points(runs, study, x_col, y_col)
    mask = pareto_mask(data[x_col], data[y_col], (max_x, max_y))
    front = data[mask].sort_values(x_col)
    fig = Figure(figsize=(7.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    _draw_front(ax, data, front, (x_col, y_col), "trials" if study else "runs")
    ax.set_xlabel(_pareto_label(x_col, max_x, study))
    ax.set_ylabel(_pareto_label(y_col, max_y, study))
    title = f"Pareto front: study {study.name}" if study else "Pareto front of the runs"
    ax.set_title(title, fontsize=12)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    return save_figure(fig, path)
