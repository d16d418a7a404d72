"""The text of PRUNING_REPORT.md: settings, results over seeds, the best per order, the study."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from kdprune.reporting.markdown import md_table
from kdprune.reporting.runs import CSV_FILE
from kdprune.reporting.statistics import order_rank
from kdprune.reporting.study import StudyInfo


def plus_minus(row: pd.Series, name: str, fmt: str = "{:.4f}", scale: float = 1.0) -> str:
    """`mean ± std` of a summary row's `name` (the mean alone for one seed), or n/a."""
    mean, std = row[f"{name}_mean"], row.get(f"{name}_std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    text = fmt.format(mean * scale)
    if row.get("n_seeds", 1) > 1 and std is not None and not math.isnan(std):
        text += " ± " + fmt.format(std * scale)
    return text


def _values(runs: pd.DataFrame, col: str) -> str:
    vals = sorted(runs[col].dropna().unique(), key=order_rank if col == "order" else str)
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in vals) or "n/a"


def _budget_lines(runs: pd.DataFrame) -> list[str]:
    lines = []
    per_order = runs.groupby("order")
    for order, group in per_order:
        stages = ", ".join(sorted(group["student_stages"].unique()))
        epochs = ", ".join(str(int(e)) for e in sorted(group["student_epochs"].unique()))
        unit = "epoch" if epochs == "1" else "epochs"
        lines.append(f"  - `{order}`: {epochs} {unit} ({stages})")
    budgets = runs["student_epochs"].unique()
    if len(budgets) == 1:
        lines.append(
            f"  - Every run trained its student for the same {int(budgets[0])} epochs: the "
            "orders had equal budgets."
        )
    else:
        lines.append(
            "  - **The budgets differ between runs**: an order with more epochs had more time "
            "to recover; compare accuracies with that in mind."
        )
    return lines


def _settings_lines(runs: pd.DataFrame, n_seeds: int) -> list[str]:
    """The Settings section: what was swept, the seeds, the teacher, the epoch budgets."""
    return [
        "## Settings",
        "",
        f"- model: {_values(runs, 'model')}; dataset: {_values(runs, 'dataset')}",
        f"- orders: {_values(runs, 'order')}",
        f"- pruning methods: {_values(runs, 'method')} (unit: {_values(runs, 'unit')}); "
        f"target ratios: {_values(runs, 'target_ratio')}",
        f"- knowledge distillation: {_values(runs, 'kd')}",
        f"- seeds: {_values(runs, 'seed')} (at most {n_seeds} per configuration)",
        f"- dense teacher test accuracy: {runs['teacher_test_acc'].mean():.4f} "
        "(mean over the runs' teachers)",
        "- student epoch budget per order (epochs of every stage but the teacher's):",
        *_budget_lines(runs),
    ]


def _results_row(row: pd.Series, shown: list[str]) -> list[str]:
    """One configuration's cells in the Results table."""
    return (
        [str(row[k]) for k in shown]
        + [str(row["order"]), str(row["kd"]), str(row["method"])]
        + [f"{row['target_ratio']:g}", str(int(row["n_seeds"]))]
        + [plus_minus(row, "test_acc"), plus_minus(row, "val_acc")]
        + [plus_minus(row, "params_removed_fraction", "{:.1f}", 100) + " %"]
        + [
            plus_minus(row, "macs_speedup", "{:.2f}") + "×",
            plus_minus(row, "cpu_speedup_bs64", "{:.2f}") + "×",
        ]
    )


def _results_lines(summary: pd.DataFrame, shown: list[str], n_seeds: int) -> list[str]:
    """The Results section: every configuration, mean ± std over its seeds."""
    header = [*shown, "order", "kd", "method", "ratio", "seeds"]
    header += ["test acc", "val acc", "params removed", "MACs speed-up", "CPU speed-up bs64"]
    rows = [_results_row(row, shown) for _, row in summary.iterrows()]
    return [
        "## Results",
        "",
        ("Mean ± sample standard deviation over seeds" if n_seeds > 1 else "One seed each")
        + "; parameters removed = 1 − params_after / params_before; speed-ups = dense / pruned.",
        "",
        *md_table(header, rows),
    ]


def _best_row(row: pd.Series, where: list[str]) -> list[str]:
    """One order's cells in the Best configuration table."""
    return (
        [str(row[k]) for k in where]
        + [str(row["order"]), str(row["kd"]), str(row["method"]), f"{row['target_ratio']:g}"]
        + [plus_minus(row, "val_acc"), plus_minus(row, "test_acc")]
        + [plus_minus(row, "params_removed_fraction", "{:.1f}", 100) + " %"]
        + [plus_minus(row, "macs_speedup", "{:.2f}") + "×"]
    )


def _best_lines(best: pd.DataFrame, shown: list[str]) -> list[str]:
    """The Best configuration per order section: picked on val_acc, test_acc reported."""
    where = [k for k in ("model", "dataset") if k in shown]
    header = [*where, "order", "kd", "method", "ratio"]
    header += ["val acc (selects)", "test acc (reported)", "params removed", "MACs speed-up"]
    rows = [_best_row(row, where) for _, row in best.iterrows()]
    return [
        "## Best configuration per order",
        "",
        "**Selected by validation accuracy (val_acc); test accuracy reported.** For each order, "
        "the configuration (kd, method, ratio) with the highest mean val_acc over its seeds; ties "
        "go to the one that removed more parameters. The test set played no part in the choice.",
        "",
        *md_table(header, rows),
    ]


def _study_lines(study: StudyInfo) -> list[str]:
    objectives = ", ".join(
        f"{n} ({d})" for n, d in zip(study.objective_names, study.directions, strict=True)
    )
    out = [
        "## Optuna study",
        "",
        f"Study `{study.name}` in `{study.storage}`: {study.n_trials} trials "
        f"({study.n_without_metrics} without a run's metrics.json); objectives: {objectives}.",
        "",
    ]
    if any("test" in n for n in study.objective_names):
        out += ["**Warning: the study optimised a test-set metric; its best trial is biased.**", ""]
    if not study.best:
        return [*out, "No trial completed."]
    out.append(
        "Best trial:" if len(study.best) == 1 else f"Pareto-optimal trials ({len(study.best)}):"
    )
    out.append("")
    params = sorted({p for b in study.best for p in b["params"]})
    header = ["trial", *study.objective_names, *params]
    rows = [
        [f"#{b['number']}"]
        + [f"{b['values'][n]:.4g}" for n in study.objective_names]
        + [str(b["params"].get(p, "")) for p in params]
        for b in study.best
    ]
    return out + md_table(header, rows)


def _figure_lines(figures: dict[str, Path]) -> list[str]:
    """The Figures section: each figure under its title, then a link to the ledger CSV."""
    out = ["## Figures", ""]
    for title, fig in figures.items():
        out += [f"### {title}", "", f"![{title}]({fig.name})", ""]
    return [*out, f"Every run's ledger: [`{CSV_FILE}`]({CSV_FILE})."]


def markdown(
    runs: pd.DataFrame,
    summary: pd.DataFrame,
    best: pd.DataFrame,
    figures: dict[str, Path],
    source: str,
    study: StudyInfo | None = None,
) -> str:
    """The text of PRUNING_REPORT.md."""
    n_seeds = int(summary["n_seeds"].max())
    shown = [k for k in ("model", "dataset", "unit") if runs[k].nunique() > 1]
    out = [
        "# Pruning + distillation report",
        "",
        f"Source: `{source}` ({len(runs)} run{'s' if len(runs) != 1 else ''}).",
        "",
        *_settings_lines(runs, n_seeds),
        "",
        *_results_lines(summary, shown, n_seeds),
        "",
        *_best_lines(best, shown),
    ]
    if study is not None:
        out += ["", *_study_lines(study)]
    out += ["", *_figure_lines(figures)]
    return "\n".join(out) + "\n"
