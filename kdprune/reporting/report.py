"""The sweep report: a CSV ledger, accuracy-vs-sparsity and Pareto plots, and a markdown summary.

Runs are read only through `kdprune.results.read_metrics`: from every `metrics.json` below a folder
(a multirun) or from the `run_dir` user attribute of an Optuna study's trials. Configurations are
selected by validation accuracy; test accuracy is only reported.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure

from kdprune.errors import ConfigError
from kdprune.paths import sqlite_file
from kdprune.reporting.markdown import md_table
from kdprune.results import METRICS_FILE, atomic_write, read_metrics

CSV_FILE = "pruning_comparison.csv"
MARKDOWN_FILE = "PRUNING_REPORT.md"
PARETO_FILE = "pareto.png"
X_AXES = {
    "sparsity": ("params_removed_fraction", "parameters removed (sparsity)"),
    "macs_speedup": ("macs_speedup", "MACs speed-up (dense MACs / pruned MACs)"),
}
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
ORDER_COLOURS = {
    "prune_then_distill": "tab:blue",
    "distill_then_prune": "tab:orange",
    "joint": "tab:green",
}
OTHER_COLOURS = ["tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
KD_STYLES = ["-", "-.", (0, (1, 1.5)), (0, (3, 1, 1, 1, 1, 1))]  # "--" is the teacher's
NO_KD_STYLE = (0, (1, 1.5))  # dotted: without distillation
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
AXIS_NAMES = {
    "val_acc": "validation accuracy",
    "test_acc": "test accuracy",
    "macs_speedup": "MACs speed-up (×)",
    "params_removed_fraction": "parameters removed (fraction)",
    "cpu_speedup_bs1": "CPU speed-up, batch 1 (×)",
    "cpu_speedup_bs64": "CPU speed-up, batch 64 (×)",
    "cpu_latency_ms_bs1_after": "CPU latency, batch 1 (ms)",
    "cpu_latency_ms_bs64_after": "CPU latency, batch 64 (ms)",
}


@dataclass
class StudyInfo:
    """What the report needs from an Optuna study besides its runs."""

    name: str
    storage: str
    directions: list[str]
    objective_names: list[str]
    trials: pd.DataFrame  # one row per finished trial: number, state, value_i, param_*
    best: list[dict[str, Any]]  # best trial (one objective) or the Pareto set (several)
    n_trials: int = 0
    n_without_metrics: int = 0


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
                f": val {_pm(row, 'val_acc')}, test {_pm(row, 'test_acc')}"
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


# --- reading ---------------------------------------------------------------------------------


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _read_yaml(path: Path) -> Any:
    try:
        with open(path) as fh:
            return yaml.safe_load(fh)
    except (OSError, yaml.YAMLError):
        return None


def ledger_row(metrics: dict[str, Any], run_dir: str | os.PathLike) -> dict[str, Any]:
    """One CSV row: the scalar keys of a metrics dict, `time_<stage>`, `student_epochs`, run_dir."""
    row = {k: v for k, v in metrics.items() if k not in ("timings", "history") and _is_scalar(v)}
    for stage, seconds in (metrics.get("timings") or {}).items():
        row[f"time_{stage}"] = seconds
    epochs: dict[str, int] = {}
    for entry in metrics.get("history") or []:
        if entry.get("stage") != "teacher":
            epochs[entry.get("stage", "?")] = epochs.get(entry.get("stage", "?"), 0) + 1
    row["student_epochs"] = sum(epochs.values())
    row["student_stages"] = " + ".join(f"{s} {n}" for s, n in epochs.items()) or "none"
    overrides = _read_yaml(Path(run_dir) / ".hydra" / "overrides.yaml")
    if isinstance(overrides, list):
        row["overrides"] = " ".join(str(o) for o in overrides)
    row["run_dir"] = str(run_dir)
    return row


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for key in CONFIG_KEYS:
        if key not in df:
            df[key] = "?" if key != "target_ratio" else np.nan
        elif key != "target_ratio":
            df[key] = df[key].fillna("?").astype(str)
    for key in [*STAT_COLUMNS, "teacher_test_acc", "seed"]:
        if key not in df:
            df[key] = np.nan
    # Ledger keys first (as they appear in metrics.json), then timings, derived and trial columns.
    keys = [c for c in df.columns if not c.startswith(("time_", "value_", "param_"))]
    tail = [
        "student_epochs",
        "student_stages",
        "trial_number",
        "trial_state",
        "overrides",
        "run_dir",
    ]
    columns = [c for c in keys if c not in tail]
    columns += [c for c in df.columns if c.startswith("time_")]
    columns += [c for c in tail if c in df and c not in ("overrides", "run_dir")]
    columns += [c for c in df.columns if c.startswith(("value_", "param_"))]
    columns += [c for c in ("overrides", "run_dir") if c in df]
    return _sort(df[columns], [*CONFIG_KEYS, "seed", "run_dir"])


def _load_run(path: Path) -> dict[str, Any] | None:
    """A run's metrics, or None (with a warning) for a file that is not a finished run's."""
    try:
        metrics = read_metrics(path)
    except (OSError, json.JSONDecodeError) as err:
        print(f"kdprune: warning: skipping {path}: {err}", file=sys.stderr)
        return None
    if not isinstance(metrics, dict) or "order" not in metrics or "val_acc" not in metrics:
        print(f"kdprune: warning: skipping {path}: not a run's metrics", file=sys.stderr)
        return None
    return metrics


def collect_runs(folder: str | os.PathLike) -> pd.DataFrame:
    """One row per `metrics.json` found below `folder` (a multirun, or any tree of runs)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder.")
    rows = []
    for path in sorted(folder.rglob(METRICS_FILE)):
        metrics = _load_run(path)
        if metrics is not None:
            rows.append(ledger_row(metrics, path.parent))
    if not rows:
        raise ConfigError(f"no {METRICS_FILE} found below {folder}.")
    return _frame(rows)


def _objective_names(study: Any, runs: list[tuple[list[float], dict[str, Any], Path]]) -> list[str]:
    """Names of the objectives: the study's metric names, else the `objective` of the trials' run
    config, else the metric every run's value equals, else value_i."""
    n = len(study.directions)
    names = list(study.metric_names or [])
    if len(names) == n and all(names):
        return names
    for _, _, run_dir in runs:
        cfg = _read_yaml(run_dir / ".hydra" / "config.yaml")
        objective = cfg.get("objective") if isinstance(cfg, dict) else None
        objective = [objective] if isinstance(objective, str) else objective
        if isinstance(objective, list) and len(objective) == n:
            return [str(o) for o in objective]
    names = []
    for i in range(n):
        candidates = ["val_acc", *(runs[0][1] if runs else [])]
        match = next(
            (
                key
                for key in candidates
                if all(
                    isinstance(m.get(key), int | float)
                    and math.isclose(m[key], v[i], abs_tol=1e-12)
                    for v, m, _ in runs
                )
            ),
            None,
        )
        names.append(match if runs and match else f"value_{i}")
    return names


def _resolve_run_dir(run_dir: Any, base: Path) -> Path | None:
    if not run_dir:
        return None
    path = Path(str(run_dir))
    if not path.is_absolute() and not (path / METRICS_FILE).exists():
        path = base / path  # a relative run_dir is taken relative to the study's database
    return path if (path / METRICS_FILE).exists() else None


def collect_study(storage: str, study_name: str | None) -> tuple[pd.DataFrame, StudyInfo]:
    """The runs of an Optuna study's trials (user attr `run_dir`) and the study's summary."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = sqlite_file(storage)
    if db is not None and not db.is_file():
        raise ConfigError(f"study database {db} does not exist.")  # Optuna would create it
    try:
        names = optuna.study.get_all_study_names(storage)
    except Exception as err:  # bad URL, unreachable server, not an Optuna database
        raise ConfigError(f"cannot open Optuna storage {storage} ({err}).") from err
    if study_name is None:
        if len(names) != 1:
            raise ConfigError(
                f"pass --study: {storage} holds studies {', '.join(names) or 'none'}."
            )
        study_name = names[0]
    if study_name not in names:
        raise ConfigError(
            f"no study {study_name!r} in {storage}; it holds: {', '.join(names) or 'none'}."
        )
    study = optuna.load_study(study_name=study_name, storage=storage)
    base = db.parent if db is not None else Path.cwd()
    trials = study.get_trials(deepcopy=False)
    run_dirs = {t.number: _resolve_run_dir(t.user_attrs.get("run_dir"), base) for t in trials}
    n_obj = len(study.directions)

    def trial_columns(t: Any) -> dict[str, Any]:
        cols: dict[str, Any] = {"trial_number": t.number, "trial_state": t.state.name}
        cols.update({f"value_{i}": v for i, v in enumerate(t.values or [None] * n_obj)})
        cols.update({f"param_{k}": v for k, v in t.params.items()})
        return cols

    rows, trial_rows, finished = [], [], []
    for t in trials:
        trial_rows.append(trial_columns(t))
        metrics = _load_run(run_dirs[t.number] / METRICS_FILE) if run_dirs[t.number] else None
        if metrics is not None:
            rows.append({**ledger_row(metrics, run_dirs[t.number]), **trial_columns(t)})
            if t.values:
                finished.append((t.values, metrics, run_dirs[t.number]))
    if not rows:
        raise ConfigError(
            f"no trial of study {study_name!r} has a run_dir with a {METRICS_FILE} "
            f"({len(trials)} trials)."
        )
    objective_names = _objective_names(study, finished)
    best = _best_trials(study, objective_names)
    info = StudyInfo(
        name=study_name,
        storage=storage,
        directions=[d.name.lower() for d in study.directions],
        objective_names=objective_names,
        trials=pd.DataFrame(trial_rows),
        best=best,
        n_trials=len(trials),
        n_without_metrics=len(trials) - len(rows),
    )
    return _frame(rows), info


def _best_trials(study: Any, objective_names: list[str]) -> list[dict[str, Any]]:
    try:
        best = [study.best_trial] if len(study.directions) == 1 else study.best_trials
    except ValueError:  # no completed trial
        return []
    return [
        {
            "number": t.number,
            "values": dict(zip(objective_names, t.values, strict=True)),
            "params": dict(t.params),
        }
        for t in best
    ]


# --- numbers ---------------------------------------------------------------------------------


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over seeds of the report's metrics, one row per configuration."""
    grouped = runs.groupby(CONFIG_KEYS, dropna=False, sort=True)
    out = grouped[STAT_COLUMNS].agg(["mean", "std"])
    out.columns = [f"{c}_{s}" for c, s in out.columns]
    out["n_seeds"] = grouped.size()
    out["seeds"] = grouped["seed"].agg(lambda s: ", ".join(str(int(v)) for v in s.dropna()))
    return _sort(out.reset_index(), CONFIG_KEYS)


def _sort(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sort by `by`, the orders in their natural sequence (prune_then_distill first)."""

    def key(col: pd.Series) -> pd.Series:
        return col.map(_order_rank) if col.name == "order" else col

    return df.sort_values(by, key=key, kind="stable", na_position="last").reset_index(drop=True)


def best_per_order(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, order): the configuration with the highest mean val_acc.

    Ties go to the one that removed more parameters. Test accuracy plays no part.
    """
    ranked = summary.sort_values(
        ["val_acc_mean", "params_removed_fraction_mean"], ascending=False, kind="stable"
    )
    best = ranked.groupby(["model", "dataset", "order"], sort=False).head(1)
    return _sort(best, ["model", "dataset", "order"])


def _pm(row: pd.Series, name: str, fmt: str = "{:.4f}", scale: float = 1.0) -> str:
    mean, std = row[f"{name}_mean"], row.get(f"{name}_std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    text = fmt.format(mean * scale)
    if row.get("n_seeds", 1) > 1 and std is not None and not math.isnan(std):
        text += " ± " + fmt.format(std * scale)
    return text


def pareto_mask(x: Sequence[float], y: Sequence[float], maximise: tuple[bool, bool]) -> np.ndarray:
    """True for the points no other point dominates (at least as good on both, better on one)."""
    pts = np.column_stack([np.asarray(x, float), np.asarray(y, float)])
    pts = pts * np.where(maximise, 1.0, -1.0)  # make both objectives "larger is better"
    keep = np.ones(len(pts), dtype=bool)
    for i, p in enumerate(pts):
        dominated = np.all(pts >= p, axis=1) & np.any(pts > p, axis=1)
        keep[i] = not dominated.any()
    return keep


# --- files -----------------------------------------------------------------------------------


def write_csv(runs: pd.DataFrame, path: Path) -> Path:
    """The ledger CSV: one row per run, run_dir last."""
    columns = [c for c in runs.columns if c != "run_dir"] + ["run_dir"]
    text = runs[columns].to_csv(index=False)
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def _save_figure(fig: Figure, path: Path) -> Path:
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=150))


def _order_rank(order: str) -> str:
    """Sort key: the orders in their natural sequence first, then any other by name."""
    rank = list(ORDER_COLOURS).index(order) if order in ORDER_COLOURS else len(ORDER_COLOURS)
    return f"{rank}:{order}"


def _series_label(key: tuple, varying: list[str]) -> str:
    parts = dict(zip(["model", "dataset", "order", "kd", "method", "unit"], key, strict=True))
    label = parts["order"]
    extra = [f"kd={parts['kd']}" if k == "kd" else parts[k] for k in varying if k != "order"]
    return label + (f" ({', '.join(extra)})" if extra else "")


def plot_accuracy(runs: pd.DataFrame, path: Path, x: str = "sparsity") -> Path:
    """Test accuracy against sparsity (or MACs speed-up): a line per order, bands of ±1 std."""
    x_col, x_label = X_AXES[x]
    summary = (
        runs.groupby(CONFIG_KEYS, dropna=False)
        .agg(
            x=(x_col, "mean"),
            mean=("test_acc", "mean"),
            std=("test_acc", "std"),
            n=("test_acc", "size"),
        )
        .reset_index()
    )
    series_keys = ["model", "dataset", "order", "kd", "method", "unit"]
    varying = [k for k in series_keys if runs[k].nunique() > 1]
    kds = sorted(k for k in runs["kd"].unique() if k != "none")
    methods = sorted(runs["method"].unique())
    others = iter(OTHER_COLOURS * 10)
    colours = {o: ORDER_COLOURS.get(o) or next(others) for o in sorted(runs["order"].unique())}

    fig = Figure(figsize=(10, 5.5), layout="constrained")
    ax = fig.add_subplot()
    series = sorted(summary.groupby(series_keys, sort=True), key=lambda kg: _order_rank(kg[0][2]))
    for key, group in series:
        group = group.sort_values("x")
        xs, mean = group["x"].to_numpy(float), group["mean"].to_numpy(float)
        std = np.nan_to_num(group["std"].to_numpy(float))
        order, kd, method = key[2], key[3], key[4]
        colour = colours[order]
        ax.plot(
            xs,
            mean,
            color=colour,
            linestyle=NO_KD_STYLE if kd == "none" else KD_STYLES[kds.index(kd) % len(KD_STYLES)],
            marker=MARKERS[methods.index(method) % len(MARKERS)],
            linewidth=2,
            markersize=6,
            label=_series_label(key, varying),
        )
        if (group["n"] > 1).any():
            ax.fill_between(xs, mean - std, mean + std, color=colour, alpha=0.15, linewidth=0)
    teachers = runs.groupby(["model", "dataset"])["teacher_test_acc"].mean().dropna()
    for i, ((model, dataset), acc) in enumerate(teachers.items()):
        name = f"teacher {model} on {dataset}" if len(teachers) > 1 else "dense teacher"
        grey = str(min(0.2 + 0.2 * i, 0.7))
        ax.axhline(acc, color=grey, linestyle=(0, (6, 3)), linewidth=1.4, zorder=1)
        ax.plot([], [], color=grey, linestyle=(0, (6, 3)), label=f"{name} ({acc:.3f})")
    if x == "sparsity":
        ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    else:
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:.1f}×")
    ax.set_xlabel(x_label)
    ax.set_ylabel("test accuracy")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.04)
    n_seeds = int(summary["n"].max())
    what = "parameter sparsity" if x == "sparsity" else "MACs speed-up"
    fig.suptitle(f"Test accuracy vs {what}", fontsize=13, fontweight="bold")
    subject = " / ".join(f"{m} on {d}" for m, d in teachers.index) or "runs"
    note = f"mean ± std over {n_seeds} seeds (bands)" if n_seeds > 1 else "one seed per point"
    ax.set_title(f"{subject}; {note}", fontsize=9, color="0.3")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    return _save_figure(fig, path)


def _pareto_axes(runs: pd.DataFrame, study: StudyInfo | None) -> tuple[str, str, bool, bool]:
    """(x column, y column, maximise x, maximise y) for the Pareto plot."""
    if study is not None and len(study.objective_names) == 2:
        cols = ["value_0", "value_1"]
        maxi = [d == "maximize" for d in study.directions]
        iy = next((i for i, n in enumerate(study.objective_names) if "acc" in n), 0)
        return cols[1 - iy], cols[iy], maxi[1 - iy], maxi[iy]
    return "macs_speedup", "val_acc", True, True


def plot_pareto(runs: pd.DataFrame, path: Path, study: StudyInfo | None = None) -> Path:
    """Accuracy vs cost of every run in grey; the Pareto-optimal ones highlighted and connected."""
    x_col, y_col, max_x, max_y = _pareto_axes(runs, study)
    data = runs
    if study is not None and x_col in study.trials:  # every finished trial, with metrics or not
        data = study.trials[study.trials["trial_state"] == "COMPLETE"]
    data = data.dropna(subset=[x_col, y_col])
    mask = pareto_mask(data[x_col], data[y_col], (max_x, max_y))
    front = data[mask].sort_values(x_col)
    fig = Figure(figsize=(7.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(
        data[x_col],
        data[y_col],
        color="0.65",
        s=28,
        label=f"all {'trials' if study else 'runs'} ({len(data)})",
    )
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
        if "trial_number" in row:
            tag = f"#{int(row['trial_number'])}"
        else:
            tag = f"{row['order']}, kd={row['kd']}, ratio {row['target_ratio']:g}"
        ax.annotate(
            tag,
            (row[x_col], row[y_col]),
            xytext=(5, 5),
            textcoords="offset points",
            fontsize=8,
        )

    def label(col: str, maximise: bool) -> str:
        name = col
        if study is not None and col.startswith("value_"):
            name = study.objective_names[int(col.removeprefix("value_"))]
        return f"{AXIS_NAMES.get(name, name)} ({'higher' if maximise else 'lower'} is better)"

    ax.set_xlabel(label(x_col, max_x))
    ax.set_ylabel(label(y_col, max_y))
    title = f"Pareto front: study {study.name}" if study else "Pareto front of the runs"
    ax.set_title(title, fontsize=12)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    return _save_figure(fig, path)


def _values(runs: pd.DataFrame, col: str) -> str:
    vals = sorted(runs[col].dropna().unique(), key=_order_rank if col == "order" else str)
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


def markdown(
    runs: pd.DataFrame,
    summary: pd.DataFrame,
    best: pd.DataFrame,
    figures: dict[str, Path],
    source: str,
    study: StudyInfo | None = None,
) -> str:
    """The text of PRUNING_REPORT.md."""
    seeds = _values(runs, "seed")
    n_seeds = int(summary["n_seeds"].max())
    out = [
        "# Pruning + distillation report",
        "",
        f"Source: `{source}` ({len(runs)} run{'s' if len(runs) != 1 else ''}).",
        "",
        "## Settings",
        "",
        f"- model: {_values(runs, 'model')}; dataset: {_values(runs, 'dataset')}",
        f"- orders: {_values(runs, 'order')}",
        f"- pruning methods: {_values(runs, 'method')} (unit: {_values(runs, 'unit')}); "
        f"target ratios: {_values(runs, 'target_ratio')}",
        f"- knowledge distillation: {_values(runs, 'kd')}",
        f"- seeds: {seeds} (at most {n_seeds} per configuration)",
        f"- dense teacher test accuracy: {runs['teacher_test_acc'].mean():.4f} "
        "(mean over the runs' teachers)",
        "- student epoch budget per order (epochs of every stage but the teacher's):",
        *_budget_lines(runs),
        "",
        "## Results",
        "",
        ("Mean ± sample standard deviation over seeds" if n_seeds > 1 else "One seed each")
        + "; parameters removed = 1 − params_after / params_before; speed-ups = dense / pruned.",
        "",
    ]
    shown = [k for k in ("model", "dataset", "unit") if runs[k].nunique() > 1]
    header = [*shown, "order", "kd", "method", "ratio", "seeds"]
    header += ["test acc", "val acc", "params removed", "MACs speed-up", "CPU speed-up bs64"]
    rows = []
    for _, row in summary.iterrows():
        rows.append(
            [str(row[k]) for k in shown]
            + [str(row["order"]), str(row["kd"]), str(row["method"])]
            + [f"{row['target_ratio']:g}", str(int(row["n_seeds"]))]
            + [_pm(row, "test_acc"), _pm(row, "val_acc")]
            + [_pm(row, "params_removed_fraction", "{:.1f}", 100) + " %"]
            + [
                _pm(row, "macs_speedup", "{:.2f}") + "×",
                _pm(row, "cpu_speedup_bs64", "{:.2f}") + "×",
            ]
        )
    out += md_table(header, rows)
    out += [
        "",
        "## Best configuration per order",
        "",
        "**Selected by validation accuracy (val_acc); test accuracy reported.** For each order, "
        "the configuration (kd, method, ratio) with the highest mean val_acc over its seeds; ties "
        "go to the one that removed more parameters. The test set played no part in the choice.",
        "",
    ]
    header = [*[k for k in ("model", "dataset") if k in shown], "order", "kd", "method", "ratio"]
    header += ["val acc (selects)", "test acc (reported)", "params removed", "MACs speed-up"]
    rows = []
    for _, row in best.iterrows():
        rows.append(
            [str(row[k]) for k in ("model", "dataset") if k in shown]
            + [str(row["order"]), str(row["kd"]), str(row["method"]), f"{row['target_ratio']:g}"]
            + [_pm(row, "val_acc"), _pm(row, "test_acc")]
            + [_pm(row, "params_removed_fraction", "{:.1f}", 100) + " %"]
            + [_pm(row, "macs_speedup", "{:.2f}") + "×"]
        )
    out += md_table(header, rows)
    if study is not None:
        out += ["", *_study_lines(study)]
    out += ["", "## Figures", ""]
    for title, fig in figures.items():
        out += [f"### {title}", "", f"![{title}]({fig.name})", ""]
    out += [f"Every run's ledger: [`{CSV_FILE}`]({CSV_FILE})."]
    return "\n".join(out) + "\n"


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
