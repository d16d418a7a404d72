"""The sweep report: a CSV ledger, accuracy-vs-compression, Pareto and verdict plots, the paired
verdicts (verdicts.csv) and a markdown summary.

Runs come from every `metrics.json` below a folder (a multirun, `runs.py`) or from the `run_dir`
user attribute of an Optuna study's trials (`study.py`). A configuration is one
`config_fingerprint`; a compression level is the configurations that differ only in order and
KD. Configurations are selected by validation accuracy within a level; test accuracy is only
reported and is what the paired verdicts compare.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kdprune.errors import ConfigError
from kdprune.reporting.budgets import check_budgets
from kdprune.reporting.config_groups import ORDERS_AND_KD, config_names, group_titles, paired_by
from kdprune.reporting.emv import EMV_FILE, plot_emv
from kdprune.reporting.inference import EQUIVALENT
from kdprune.reporting.plots import AXIS_TITLES, X_AXES, plot_accuracy, plot_pareto
from kdprune.reporting.quantized import SIZE_PLOT, has_int8, plot_size
from kdprune.reporting.report_markdown import ReportInputs, markdown
from kdprune.reporting.report_sections import plus_minus
from kdprune.reporting.runs import CSV_FILE, write_csv
from kdprune.reporting.statistics import LATENCY_TARGET_KEYS, best_per_level, summarise
from kdprune.reporting.study import StudyInfo
from kdprune.reporting.verdict_plot import VERDICTS_PLOT, plot_verdicts
from kdprune.reporting.verdicts import (
    A_BETTER,
    B_BETTER,
    VERDICTS_FILE,
    Options,
    unmatched,
    verdicts,
    write_verdicts,
)
from kdprune.results import atomic_write
from kdprune.run_record import CONFIG_FINGERPRINT, TEST_ACC, VAL_ACC

MARKDOWN_FILE = "PRUNING_REPORT.md"
PARETO_FILE = "pareto.png"


@dataclass
class Report:
    """The files a report wrote, the best configuration per compression level, the verdicts."""

    files: list[Path] = field(default_factory=list)
    best: pd.DataFrame = field(default_factory=pd.DataFrame)
    verdicts: pd.DataFrame = field(default_factory=pd.DataFrame)
    names: dict[str, str] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    study: StudyInfo | None = None

    def _best_lines(self) -> list[str]:
        lines = [
            "best per compression level (selected by val_acc among equal MACs, test reported):"
        ]
        for _, row in self.best.iterrows():
            lines.append(
                f"  {self.titles[row['pairing_key']]}: {self.names[row[CONFIG_FINGERPRINT]]}"
                f": val {plus_minus(row, VAL_ACC)}, test {plus_minus(row, TEST_ACC)}"
                f" (n={int(row['n_seeds'])}, {row['macs_speedup_mean']:.2f}x MACs)"
            )
        if self.best.empty:
            lines.append("  none: no level holds two configurations (see the Pareto front)")
        return lines

    def summary(self) -> str:
        """A few lines: the best per level (picked on val, test reported), the verdicts."""
        lines = self._best_lines()
        said = self.verdicts["verdict"].fillna("").astype(str)
        decided = said.isin([A_BETTER, B_BETTER])
        equivalent = said.str.startswith(EQUIVALENT)
        how = ""
        if len(self.verdicts):
            first = self.verdicts.iloc[0]
            how = f" ({first['analysis']} analysis, {first['correction']} within each family)"
        lines.append(
            f"verdicts: {len(self.verdicts)} paired comparisons{how}: {int(decided.sum())} "
            f"better / worse, {int(equivalent.sum())} equivalent, "
            f"{len(said) - int(decided.sum()) - int(equivalent.sum())} undecided or untested; "
            f"see {VERDICTS_FILE}"
        )
        for _, row in self.verdicts[decided].iterrows():
            lines.append(
                f"  {self.titles[row['pairing_key']]}: {row['verdict_text']}"
                f" ({row['a']} - {row['b']}: {row['mean_diff']:+.4f}"
                f" [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}], n={row['n']})" + unmatched(row)
            )
        if self.study is not None and self.study.best:
            what = "best trial" if len(self.study.best) == 1 else "Pareto-optimal trials"
            lines.append(f"study {self.study.name}, {what}:")
            for b in self.study.best:
                values = ", ".join(f"{k} {v:.4g}" for k, v in b["values"].items())
                params = ", ".join(f"{k}={v}" for k, v in b["params"].items())
                lines.append(f"  #{b['number']}: {values} | {params}")
        return "\n".join(lines)


def _figures(
    runs: pd.DataFrame, summary: pd.DataFrame, out_dir: Path, x: str, pareto: bool,
    study: StudyInfo | None,
) -> dict[str, Path]:  # fmt: skip
    """The accuracy plot, and the Pareto plot when asked for or the study has two objectives."""
    title = AXIS_TITLES[x]
    figures = {
        f"Accuracy vs {title}": plot_accuracy(runs, out_dir / f"accuracy_vs_{x}.png", x, summary)
    }
    if pareto or (study is not None and len(study.directions) > 1):
        figures["Pareto front"] = plot_pareto(runs, out_dir / PARETO_FILE, study)
    if study is not None and study.emv is not None:
        figures["Expected maximum validation performance"] = plot_emv(
            study.emv, study.objective_names[0], out_dir / EMV_FILE
        )
    if has_int8(runs):
        figures["Accuracy vs size and latency, FP32 and INT8"] = plot_size(
            runs, out_dir / SIZE_PLOT
        )
    return figures


def check_latency_axis(runs: pd.DataFrame) -> None:
    """Measured speed-ups make one x axis only when every run has one, all on one target (the
    same runtime, batch, threads and CPU); else ConfigError in one line."""
    has = runs.get("latency_speedup", pd.Series(float("nan"), runs.index)).notna()
    if not has.all():
        raise ConfigError(
            f"--x latency_speedup needs a measured speed-up in every run, and {int((~has).sum())} "
            f"of {len(runs)} lack one (only prune_method.unit=latency runs measure it); use "
            "--x macs_speedup"
        )
    keys = [k for k in LATENCY_TARGET_KEYS if k in runs]
    targets = runs[keys].astype(str).drop_duplicates()
    if len(targets) > 1:
        first, second = (", ".join(t) for t in targets.head(2).itertuples(index=False))
        raise ConfigError(
            f"--x latency_speedup plots speed-ups measured on one target, and these runs "
            f"mix {len(targets)} ({first} and {second}, ...); report them apart"
        )


def write_report(
    runs: pd.DataFrame,
    out_dir: str | os.PathLike,
    *,
    x: str = "sparsity",
    pareto: bool = False,
    study: StudyInfo | None = None,
    source: str = "",
    compare: str = ORDERS_AND_KD,
    options: Options | None = None,
) -> Report:
    """Write the ledger CSV, verdicts.csv, the plots and PRUNING_REPORT.md into out_dir; a
    Pareto plot when the study has several objectives or `pareto` is set. `compare` names what
    the verdicts compare: the orders and KD (default), or a config group (`prune_method`);
    `options` how they are reached (family, correction, margin, analysis)."""
    if x not in X_AXES:
        raise ConfigError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}.")
    if x == "latency_speedup":
        check_latency_axis(runs)
    out_dir = Path(out_dir)
    runs = paired_by(runs, compare)
    summary = summarise(runs)
    options = options or Options()
    table = verdicts(runs, summary, compare, options)
    titles = group_titles(summary, compare)
    files = [write_csv(runs, out_dir / CSV_FILE), write_verdicts(table, out_dir / VERDICTS_FILE)]
    figures = _figures(runs, summary, out_dir, x, pareto, study)
    if not table.empty:
        figures["Paired verdicts"] = plot_verdicts(table, titles, out_dir / VERDICTS_PLOT)
    files += figures.values()
    inputs = ReportInputs(
        runs, summary, table, check_budgets(runs, summary), titles, figures,
        source or str(out_dir), study, compare, options,
    )  # fmt: skip
    text = markdown(inputs)
    files.append(atomic_write(out_dir / MARKDOWN_FILE, lambda fh: fh.write(text.encode())))
    return Report(files, best_per_level(summary), table, config_names(summary), titles, study)
