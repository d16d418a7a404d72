"""What a worker says when the study is done: the best feasible trial (or Pareto front), in the log
and in `optimization_results.yaml` beside the job folders."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf

from kdprune.results import atomic_write
from kdprune.sweeping.budget import counts
from kdprune.sweeping.constraints import Bound, best_trials, is_feasible

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"


def study_results(study: optuna.Study, bounds: list[Bound]) -> dict[str, Any]:
    """The results file's content: counts, constraints, the best feasible trial(s)."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    results: dict[str, Any] = {
        "name": "optuna",
        "study_name": study.study_name,
        "finished_trials": sum(counts(t) for t in trials),
        "complete_trials": len(complete),
        "pruned_trials": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "constraints": [str(b) for b in bounds],
        "feasible_trials": sum(is_feasible(t) for t in complete),
    }
    best = best_trials(study)
    if len(study.directions) == 1:
        top = best[0] if best else None
        results["best_trial"] = top.number if top else None
        results["best_params"] = dict(top.params) if top else None
        results["best_value"] = top.value if top else None
    else:
        results["solutions"] = [
            {"number": t.number, "params": dict(t.params), "values": list(t.values)} for t in best
        ]
    return results


def log_results(results: dict[str, Any]) -> None:
    """The results as log lines (Hydra's console)."""
    where = f" subject to {' and '.join(results['constraints'])}" if results["constraints"] else ""
    log.info(
        "study %s: %d finished trials (%d complete, %d pruned), %d feasible",
        results["study_name"],
        results["finished_trials"],
        results["complete_trials"],
        results["pruned_trials"],
        results["feasible_trials"],
    )
    if "solutions" in results:
        log.info("Number of Pareto solutions%s: %d", where, len(results["solutions"]))
        for s in results["solutions"]:
            log.info("    #%d values: %s, params: %s", s["number"], s["values"], s["params"])
    elif results["best_trial"] is None:
        log.info("No best trial: no complete trial is feasible%s", where)
    else:
        log.info("Best trial%s: #%d", where, results["best_trial"])
        log.info("Best parameters: %s", results["best_params"])
        log.info("Best value: %s", results["best_value"])


def write_results(results: dict[str, Any], sweep_dir: str | Path) -> Path:
    """Write `optimization_results.yaml` into the sweep folder (made if missing), atomically."""
    text = OmegaConf.to_yaml(OmegaConf.create(results))
    return atomic_write(Path(sweep_dir) / RESULTS_FILE, lambda fh: fh.write(text.encode()))
