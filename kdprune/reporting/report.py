"""The sweep report: a CSV ledger, accuracy-vs-sparsity and Pareto plots, and a markdown summary.

Runs come from every `metrics.json` below a folder (a multirun, `runs.py`) or from the `run_dir`
user attribute of an Optuna study's trials (`study.py`). Configurations are selected by
validation accuracy; test accuracy is only reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kdprune.errors import ConfigError
from kdprune.reporting.plots import X_AXES, plot_accuracy, plot_pareto
from kdprune.reporting.report_markdown import markdown, plus_minus
from kdprune.reporting.runs import CSV_FILE, write_csv
from kdprune.reporting.statistics import best_per_order, summarise
from kdprune.reporting.study import StudyInfo
from kdprune.results import atomic_write

MARKDOWN_FILE = "PRUNING_REPORT.md"
PARETO_FILE = "pareto.png"


@dataclass
class Report:
    """The files a report wrote and the configuration selected per order."""

    files: list[Path] = field(default_factory=list)
    best: pd.DataFrame = field(default_factory=pd.DataFrame)
    study: StudyInfo | None = None

    def summary(self) -> str:
        """A few lines: the best configuration per order (picked on val, test reported)."""
        lines = ["best per order (selected by val_acc, test_acc reported):"]
        mixed = self.best[["model", "dataset"]].drop_duplicates().shape[0] > 1
        for _, row in self.best.iterrows():
            where = f"{row['model']} on {row['dataset']}: " if mixed else ""
            lines.append(
                f"  {where}{row['order']:<20} kd={row['kd']} {row['method']}"
                f" ratio {row['target_ratio']:g}"
                f": val {plus_minus(row, 'val_acc')}, test {plus_minus(row, 'test_acc')}"
                f" (n={int(row['n_seeds'])})"
            )
        if self.study is not None and self.study.best:
            what = "best trial" if len(self.study.best) == 1 else "Pareto-optimal trials"
            lines.append(f"study {self.study.name}, {what}:")
            for b in self.study.best:
                values = ", ".join(f"{k} {v:.4g}" for k, v in b["values"].items())
                params = ", ".join(f"{k}={v}" for k, v in b["params"].items())
                lines.append(f"  #{b['number']}: {values} | {params}")
        return "\n".join(lines)


def write_report(
    runs: pd.DataFrame,
    out_dir: str | os.PathLike,
    *,
    x: str = "sparsity",
    pareto: bool = False,
    study: StudyInfo | None = None,
    source: str = "",
) -> Report:
    """Write the CSV, the plots and PRUNING_REPORT.md into out_dir; a Pareto plot when the study
    has several objectives or `pareto` is set."""
    if x not in X_AXES:
        raise ConfigError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}.")
    out_dir = Path(out_dir)
    summary = summarise(runs)
    best = best_per_order(summary)
    files = [write_csv(runs, out_dir / CSV_FILE)]
    figures = {
        "Accuracy vs " + ("sparsity" if x == "sparsity" else "MACs speed-up"): plot_accuracy(
            runs, out_dir / f"accuracy_vs_{x}.png", x
        )
    }
    if pareto or (study is not None and len(study.directions) > 1):
        figures["Pareto front"] = plot_pareto(runs, out_dir / PARETO_FILE, study)
    files += figures.values()
    text = markdown(runs, summary, best, figures, source or str(out_dir), study)
    files.append(atomic_write(out_dir / MARKDOWN_FILE, lambda fh: fh.write(text.encode())))
    return Report(files=files, best=best, study=study)
