"""Constrained selection: maximise validation accuracy *subject to* a compression bound.

A sweep's `hydra.sweeper.constraints` maps a metric of the run's metrics.json to its bounds, e.g.
`{macs_speedup: {min: 2.0}}` (at least 2x fewer MACs). Each bound becomes one Optuna constraint
value, attached to the trial with `Trial.set_constraint` before `study.tell` (Optuna 5's
replacement for the samplers' `constraints_func`, which it deprecates; TPE, NSGA-II and GP read
these values): `min - value` or `value - max`, feasible when <= 0. A complete trial whose run did
not record the metric gets +inf: never feasible. `best_trials` chooses among feasible trials only.

optuna-dashboard (0.21) reads neither: it shows a trial's `constraints` system attr (a list, the
key Optuna 4's samplers wrote) and asks the storage for `get_best_trial`, which ignores
constraints. So the values are also stored as that list (in the order of the bounds; their
names and `feasible` are user attrs), and `kdprune dashboard` serves a storage whose best trial is
`best_trials`' (`feasible_best_storage`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from kdprune.errors import ConfigError
from kdprune.sweeping import internals
from kdprune.sweeping.selectable import check_selectable

DASHBOARD_KEY = "constraints"  # the trial system attr optuna-dashboard shows


@dataclass(frozen=True)
class Bound:
    """`low <= metric <= high` (either side may be open)."""

    metric: str
    low: float | None = None
    high: float | None = None

    def violations(self, value: Any) -> dict[str, float]:
        """Optuna constraint values (<= 0: feasible), keyed `metric>=` / `metric<=`."""
        known = isinstance(value, int | float) and math.isfinite(value)
        out = {}
        if self.low is not None:
            out[f"{self.metric}>="] = self.low - value if known else math.inf
        if self.high is not None:
            out[f"{self.metric}<="] = value - self.high if known else math.inf
        return out

    def __str__(self) -> str:
        low = [f"{self.metric} >= {self.low:g}"] if self.low is not None else []
        high = [f"{self.metric} <= {self.high:g}"] if self.high is not None else []
        return " and ".join(low + high)


def parse_constraints(spec: Mapping[str, Any] | None) -> list[Bound]:
    """`{metric: {min: x, max: y}}` as Bounds; ConfigError (one line) for anything else.

    A null side is no bound, and a metric whose sides are all null no constraint: conf/sweep
    lists `latency_speedup: {min: null}` so that `hydra.sweeper.constraints.latency_speedup.min=2`
    sets it without Hydra's `+`."""
    bounds = []
    for metric, sides in (spec or {}).items():
        key = f"hydra.sweeper.constraints.{metric}"
        if not isinstance(sides, Mapping) or not sides or set(sides) - {"min", "max"}:
            raise ConfigError(f"{key} must be {{min: x}}, {{max: y}} or both, got {sides!r}")
        given = {side: value for side, value in sides.items() if value is not None}
        for side, value in given.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{key}.{side} must be a number, got {value!r}")
        check_selectable(str(metric), "hydra.sweeper.constraints key")
        if given:
            bounds.append(Bound(str(metric), given.get("min"), given.get("max")))
    return bounds


def attach_constraints(
    trial: optuna.Trial, bounds: list[Bound], metrics: Mapping[str, Any]
) -> dict[str, float]:
    """Set the trial's constraint values from its run's metrics (before `study.tell`); also keep
    each constrained metric as a user attr. Returns the values set."""
    values = {}
    for bound in bounds:
        metric = metrics.get(bound.metric)
        if isinstance(metric, int | float):
            trial.set_user_attr(bound.metric, metric)
        values.update(bound.violations(metric))
    for key, value in values.items():
        trial.set_constraint(key, value)
    # optuna-dashboard's key (see the module docstring); Trial has no public setter for it.
    # JSON has no infinity: the dashboard's page would not parse one, so +inf is stored as the
    # largest float (still never feasible). Optuna reads the list too, beside the named values.
    shown = [min(v, sys.float_info.max) for v in values.values()]
    trial.storage.set_trial_system_attr(internals.trial_id(trial), DASHBOARD_KEY, shown)
    trial.set_user_attr("constraints", list(values))
    trial.set_user_attr("feasible", all(v <= 0.0 for v in values.values()))
    return values


def feasible_best_storage(storage: BaseStorage) -> BaseStorage:
    """`storage`, its `get_best_trial` answering with kdprune's best (feasible) trial, for
    optuna-dashboard; where no complete trial is feasible it raises ValueError, as Optuna does when
    no trial is complete (the dashboard then reports an error instead of naming an infeasible
    trial best)."""

    def get_best_trial(study_id: int) -> FrozenTrial:
        study = optuna.load_study(
            study_name=storage.get_study_name_from_id(study_id), storage=storage
        )
        best = best_trials(study)
        if not best:
            raise ValueError(f"no complete trial of study {study.study_name} is feasible")
        return best[0]

    # An instance attribute: this storage object only (mypy allows no assignment to a method).
    storage.get_best_trial = get_best_trial  # type: ignore[method-assign]
    return storage


def is_feasible(trial: FrozenTrial) -> bool:
    """All of a trial's constraint values are <= 0 (a trial without constraints is feasible)."""
    return all(v <= 0.0 for v in trial.constraints.values())


def _dominates(a: FrozenTrial, b: FrozenTrial, signs: list[float]) -> bool:
    pairs = [(s * x, s * y) for s, x, y in zip(signs, a.values, b.values, strict=True)]
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)


def _value(trial: FrozenTrial) -> float:
    """A complete single-objective trial's value (it always has one)."""
    if trial.value is None:
        raise ValueError(f"trial {trial.number} is complete but has no value")
    return trial.value


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best feasible complete trial (one objective) or the feasible Pareto front (several);
    empty when no complete trial is feasible. Infeasible trials are never returned."""
    feasible = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_feasible(t)
    ]
    signs = [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions]
    if not feasible:
        return []
    if len(signs) == 1:
        return [max(feasible, key=lambda t: signs[0] * _value(t))]
    return [t for t in feasible if not any(_dominates(o, t, signs) for o in feasible)]
