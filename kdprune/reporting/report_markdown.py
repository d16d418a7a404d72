"""The text of PRUNING_REPORT.md: settings, budgets, results over seeds, the paired verdicts,
the best per compression level, the Pareto front, the study."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kdprune.reporting.budgets import BudgetCheck
from kdprune.reporting.config_groups import (
    LEGACY_KEYS,
    ORDERS_AND_KD,
    config_names,
    configs_of,
    distinguishing_keys,
)
from kdprune.reporting.config_groups import describe as describe_config
from kdprune.reporting.emv import emv_lines
from kdprune.reporting.markdown import md_table
from kdprune.reporting.quantized import has_int8, quantization_lines
from kdprune.reporting.report_sections import (
    budget_statement,
    interval,
    plus_minus,
    select_epoch_note,
    selection_lines,
    verdict_lines,
)
from kdprune.reporting.runs import CSV_FILE
from kdprune.reporting.statistics import (
    CONFIDENCE,
    best_per_level,
    duplicates,
    order_rank,
    pareto_configurations,
)
from kdprune.reporting.study import StudyInfo
from kdprune.reporting.verdicts import VERDICTS_FILE, Options
from kdprune.run_record import (
    CONFIG_FINGERPRINT,
    MACS_SPEEDUP,
    TEACHER_TEST_ACC,
    TEST_ACC,
    VAL_ACC,
    WEIGHT_SPARSITY,
)

# Keys with their own column in the Results table (not repeated under "differs in").
COLUMN_KEYS = ("schedule.name", "kd.name", "prune_method.name", "prune_method.unit")
COLUMN_GROUPS = ("model.", "dataset.", "prune_method.ratio")


@dataclass
class ReportInputs:
    """Everything the markdown is written from."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    verdicts: pd.DataFrame
    budgets: BudgetCheck
    titles: dict[str, str]  # pairing key -> compression level title
    figures: dict[str, Path] = field(default_factory=dict)
    source: str = ""
    study: StudyInfo | None = None
    compare: str = ORDERS_AND_KD  # what the verdicts compare (see reporting.configs)
    options: Options = field(default_factory=Options)  # family, correction, margin, analysis


def _values(runs: pd.DataFrame, col: str) -> str:
    vals = sorted(runs[col].dropna().unique(), key=order_rank if col == "order" else str)
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in vals) or "n/a"


def _identity_lines(runs: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """How configurations were told apart; runs without `config`; duplicate seeds."""
    out = [
        f"- configurations: {len(summary)}, each one `config_fingerprint` of the run's resolved "
        "config (seeds, paths, logging and timing settings left out); a point's seeds are the "
        "*distinct* seeds of its configuration"
    ]
    legacy = int((runs["fingerprint_from"] != "config").sum())
    if legacy:
        keys = ", ".join(LEGACY_KEYS)
        out.append(
            f"- **{legacy} run(s) have no `config` in metrics.json** (written before it was "
            f"recorded): they are told apart only by {keys}, so runs that differ in anything "
            "else (temperature, alpha, budget, starting point ...) may be pooled as seeds"
        )
    dup = duplicates(runs)
    if len(dup):
        names = config_names(summary)
        targets = summary.set_index(CONFIG_FINGERPRINT)["target_ratio"]
        cases = "; ".join(
            f"`{names[fp]}` (target {targets[fp]:g}) seed {int(seed)}: {len(dirs)} runs"
            for (fp, seed), dirs in dup.items()
        )
        out.append(
            f"- **duplicates**: {cases}. Each seed counts once (its runs averaged); see "
            f"`{CSV_FILE}` for their folders"
        )
    estimated = int(runs["weight_sparsity_estimated"].fillna(False).astype(bool).sum())
    if estimated:
        out.append(
            f"- weight sparsity estimated for {estimated} run(s) without `weight_sparsity`, "
            "as 1 − nonzero_fraction × params_after / params_before"
        )
    return out


def _settings_lines(runs: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """The Settings section: what was swept, the seeds, the teacher, the configurations."""
    return [
        "## Settings",
        "",
        f"- model: {_values(runs, 'model')}; dataset: {_values(runs, 'dataset')}",
        f"- orders: {_values(runs, 'order')}",
        f"- pruning methods: {_values(runs, 'method')} (unit: {_values(runs, 'unit')}); "
        f"target ratios: {_values(runs, 'target_ratio')} (labels only: points sit at the "
        "compression achieved)",
        f"- knowledge distillation: {_values(runs, 'kd')}",
        f"- seeds: {_values(runs, 'seed')} (at most {int(summary['n_seeds'].max())} distinct "
        "per configuration)",
        f"- dense teacher test accuracy: {runs[TEACHER_TEST_ACC].mean():.4f} "
        "(mean over the runs' teachers)",
        *_identity_lines(runs, summary),
    ]


def _budget_lines(runs: pd.DataFrame, inputs: ReportInputs) -> list[str]:
    """The Budgets section: student epochs per order from the histories, then the verdict on
    equal budgets (starting weights and epoch counts within each compared group)."""
    lines = ["## Budgets", "", "Student epochs per order (from each run's history):", ""]
    for order, group in sorted(runs.groupby("order"), key=lambda og: order_rank(og[0])):
        stages = ", ".join(sorted(group["student_stages"].unique()))
        epochs = ", ".join(str(int(e)) for e in sorted(group["student_epochs"].unique()))
        lines.append(f"- `{order}`: {epochs} epoch{'' if epochs == '1' else 's'} ({stages})")
    return [*lines, "", *budget_statement(inputs.budgets, inputs.titles)]


def _other_keys(summary: pd.DataFrame) -> list[str]:
    """Keys that tell configurations apart beyond the table's own columns."""
    keys = distinguishing_keys(configs_of(summary).values())
    return [k for k in keys if k not in COLUMN_KEYS and not k.startswith(COLUMN_GROUPS)]


def _has_latency(summary: pd.DataFrame) -> bool:
    """Whether any configuration measured its speed-up on a latency target (`unit=latency`)."""
    return "latency_speedup_mean" in summary and bool(summary["latency_speedup_mean"].notna().any())


def _measured(row: pd.Series) -> str:
    """The measured speed-up on a configuration's latency target, and the target, or n/a."""
    text = plus_minus(row, "latency_speedup", "{:.2f}")
    if text == "n/a":
        return text
    return (
        f"{text}× ({row['latency_runtime']}, batch {int(row['latency_batch_size'])}, "
        f"{int(row['latency_threads'])} thread(s))"
    )


def _results_lines(summary: pd.DataFrame, shown: list[str]) -> list[str]:
    """The Results section: every configuration, mean ± std and a t interval over its seeds."""
    others = _other_keys(summary)
    configs = configs_of(summary)
    header = [*shown, "order", "kd", "method", "target", *(["differs in"] if others else [])]
    header += ["seeds", "test acc", f"test {CONFIDENCE:.0%} CI", "val acc", "weight sparsity"]
    header += ["params removed", "MACs speed-up", "CPU speed-up bs64"]
    measured = _has_latency(summary)
    header += ["measured speed-up (latency target)"] if measured else []
    rows = []
    for _, row in summary.iterrows():
        cells = [str(row[k]) for k in shown]
        cells += [str(row["order"]), str(row["kd"]), str(row["method"])]
        cells += [f"{row['target_ratio']:g}"]
        cells += [describe_config(configs[row[CONFIG_FINGERPRINT]], others)] if others else []
        cells += [str(int(row["n_seeds"])), plus_minus(row, TEST_ACC)]
        cells += [interval(row, TEST_ACC), plus_minus(row, VAL_ACC)]
        cells += [plus_minus(row, WEIGHT_SPARSITY, "{:.1f}", 100) + " %"]
        cells += [plus_minus(row, "params_removed_fraction", "{:.1f}", 100) + " %"]
        cells += [plus_minus(row, MACS_SPEEDUP, "{:.2f}") + "×"]
        cells += [plus_minus(row, "cpu_speedup_bs64", "{:.2f}") + "×"]
        cells += [_measured(row)] if measured else []
        rows.append(cells)
    return [
        "## Results",
        "",
        "One row per configuration. "
        + (
            "Mean ± sample standard deviation over its distinct seeds, "
            f"{CONFIDENCE:.0%} t interval of the mean (one seed: none)"
            if summary["n_seeds"].max() > 1
            else "One seed each: no spread, no interval"
        )
        + "; compression as achieved: weight sparsity = dense conv + linear weights removed or "
        "zero; parameters removed = 1 − params_after / params_before; speed-ups = dense / "
        "pruned. The target is a label.",
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
    out += md_table(header, rows)
    if study.emv is not None:
        out += ["", *emv_lines(study.emv, study.objective_names[0], study.n_pruned)]
    return out


def _figure_lines(figures: dict[str, Path]) -> list[str]:
    """The Figures section: each figure under its title, then links to the CSV files."""
    out = ["## Figures", ""]
    for title, fig in figures.items():
        out += [f"### {title}", "", f"![{title}]({fig.name})", ""]
    return [
        *out,
        f"Every run's ledger: [`{CSV_FILE}`]({CSV_FILE}); every comparison: "
        f"[`{VERDICTS_FILE}`]({VERDICTS_FILE}).",
    ]


def markdown(inputs: ReportInputs) -> str:
    """The text of PRUNING_REPORT.md."""
    runs, summary = inputs.runs, inputs.summary
    shown = [k for k in ("model", "dataset", "unit") if runs[k].nunique() > 1]
    names = config_names(summary)
    out = [
        "# Pruning + distillation report",
        "",
        f"Source: `{inputs.source}` ({len(runs)} run{'s' if len(runs) != 1 else ''}).",
        "",
        *_settings_lines(runs, summary),
        "",
        *_budget_lines(runs, inputs),
        "",
        *_results_lines(summary, shown),
        "",
        *verdict_lines(
            inputs.verdicts, inputs.budgets, inputs.titles, inputs.compare, inputs.options, runs
        ),
        "",
        *selection_lines(
            summary,
            best_per_level(summary),
            pareto_configurations(summary),
            inputs.titles,
            names,
            select_epoch_note(runs),
            inputs.compare,
        ),
    ]
    if has_int8(runs):
        out += ["", *quantization_lines(runs, summary)]
    if inputs.study is not None:
        out += ["", *_study_lines(inputs.study)]
    out += ["", *_figure_lines(inputs.figures)]
    return "\n".join(out) + "\n"
