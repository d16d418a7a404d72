"""Reading an Optuna study: the runs of its trials (user attr `run_dir`) and a `StudyInfo`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from kdprune.errors import ConfigError
from kdprune.paths import journal_file, sqlite_file
from kdprune.reporting.runs import ledger_frame, ledger_row, load_run, read_yaml
from kdprune.results import METRICS_FILE
from kdprune.run_record import VAL_ACC

# A finished trial with a run: its objective values, the run's metrics and its folder.
FinishedRun = tuple[list[float], dict[str, Any], Path]


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
    emv: pd.DataFrame | None = None  # expected best value by number of trials (one objective)
    n_pruned: int = 0


def _matching_metric(i: int, runs: list[FinishedRun]) -> str:
    """The metric every run's i-th objective value equals (val_acc first), else value_i."""
    candidates = [VAL_ACC, *(runs[0][1] if runs else [])]
    match = next(
        (
            key
            for key in candidates
            if all(
                isinstance(m.get(key), int | float) and math.isclose(m[key], v[i], abs_tol=1e-12)
                for v, m, _ in runs
            )
        ),
        None,
    )
    return match if runs and match else f"value_{i}"


def _objective_names(study: Any, runs: list[FinishedRun]) -> list[str]:
    """Names of the objectives: the study's metric names, else the `objective` of the trials' run
    config, else the metric every run's value equals, else value_i."""
    n = len(study.directions)
    names = list(study.metric_names or [])
    if len(names) == n and all(names):
        return names
    for _, _, run_dir in runs:
        cfg = read_yaml(run_dir / ".hydra" / "config.yaml")
        objective = cfg.get("sweep_metric") if isinstance(cfg, dict) else None
        objective = [objective] if isinstance(objective, str) else objective
        if isinstance(objective, list) and len(objective) == n:
            return [str(o) for o in objective]
    return [_matching_metric(i, runs) for i in range(n)]


def _resolve_run_dir(run_dir: Any, base: Path) -> Path | None:
    if not run_dir:
        return None
    path = Path(str(run_dir))
    if not path.is_absolute() and not (path / METRICS_FILE).exists():
        path = base / path  # a relative run_dir is taken relative to the study's database
    return path if (path / METRICS_FILE).exists() else None


def _open(storage: str) -> Any:
    """The storage behind a URL (journal:/// files too); `ConfigError` if it cannot be read."""
    from kdprune.sweeping.storage import open_storage, redacted

    for path in (sqlite_file(storage), journal_file(storage)):
        if path is not None and not path.is_file():
            raise ConfigError(f"study file {path} does not exist.")  # Optuna would create it
    try:
        return open_storage(storage)
    except ConfigError:
        raise
    except Exception as err:  # unreachable server, not an Optuna database
        raise ConfigError(f"cannot open Optuna storage {redacted(storage)} ({err}).") from err


def _study_name(storage: Any, url: str, study_name: str | None) -> str:
    """The study to read: `study_name`, or the storage's only study; `ConfigError` otherwise."""
    import optuna

    try:
        names = optuna.study.get_all_study_names(storage)
    except Exception as err:  # not an Optuna database
        raise ConfigError(f"cannot read Optuna storage {url} ({err}).") from err
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
    return study_name


def _trial_columns(t: Any, n_obj: int) -> dict[str, Any]:
    """A trial's ledger columns: number, state, value_i, param_*."""
    cols: dict[str, Any] = {"trial_number": t.number, "trial_state": t.state.name}
    cols.update({f"value_{i}": v for i, v in enumerate(t.values or [None] * n_obj)})
    cols.update({f"param_{k}": v for k, v in t.params.items()})
    return cols


def _trial_rows(
    trials: list[Any], base: Path, n_obj: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[FinishedRun]]:
    """(ledger rows of the trials with a run, every trial's columns, the finished runs)."""
    run_dirs = {t.number: _resolve_run_dir(t.user_attrs.get("run_dir"), base) for t in trials}
    rows, trial_rows, finished = [], [], []
    for t in trials:
        trial_rows.append(_trial_columns(t, n_obj))
        run_dir = run_dirs[t.number]
        metrics = load_run(run_dir / METRICS_FILE) if run_dir else None
        if metrics is not None and run_dir:
            rows.append({**ledger_row(metrics, run_dir), **_trial_columns(t, n_obj)})
            if t.values:
                finished.append((t.values, metrics, run_dir))
    return rows, trial_rows, finished


def _best_trials(study: Any, objective_names: list[str]) -> list[dict[str, Any]]:
    """The best feasible trial (or Pareto front): a trial that misses the sweep's constraints
    (e.g. MACs speed-up >= 2) is never reported as best."""
    from kdprune.sweeping.constraints import best_trials

    return [
        {
            "number": t.number,
            "values": dict(zip(objective_names, t.values, strict=True)),
            "params": dict(t.params),
        }
        for t in best_trials(study)
    ]


def _emv(study: Any) -> pd.DataFrame | None:
    """The expected-maximum curve of the feasible complete trials (one objective), else None."""
    from optuna.trial import TrialState

    from kdprune.reporting.emv import expected_max_curve
    from kdprune.sweeping.constraints import is_feasible

    if len(study.directions) != 1:
        return None
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    values = [t.value for t in complete if is_feasible(t)]  # a pruned trial has a value too
    maximise = study.directions[0].name == "MAXIMIZE"
    return expected_max_curve(values, maximise) if values else None


def collect_study(storage: str, study_name: str | None) -> tuple[pd.DataFrame, StudyInfo]:
    """The runs of an Optuna study's trials (user attr `run_dir`) and the study's summary."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opened = _open(storage)
    study_name = _study_name(opened, storage, study_name)
    study = optuna.load_study(study_name=study_name, storage=opened)
    db = sqlite_file(storage)
    trials = study.get_trials(deepcopy=False)
    rows, trial_rows, finished = _trial_rows(
        trials, db.parent if db is not None else Path.cwd(), len(study.directions)
    )
    if not rows:
        raise ConfigError(
            f"no trial of study {study_name!r} has a run_dir with a {METRICS_FILE} "
            f"({len(trials)} trials)."
        )
    objective_names = _objective_names(study, finished)
    info = StudyInfo(
        name=study_name,
        storage=storage,
        directions=[d.name.lower() for d in study.directions],
        objective_names=objective_names,
        trials=pd.DataFrame(trial_rows),
        best=_best_trials(study, objective_names),
        n_trials=len(trials),
        n_without_metrics=len(trials) - len(rows),
        emv=_emv(study),
        n_pruned=sum(t.state.name == "PRUNED" for t in trials),
    )
    return ledger_frame(rows), info
