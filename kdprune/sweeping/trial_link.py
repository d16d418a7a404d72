"""A job's side of its Optuna trial: after each student epoch *after the cut*, report validation
accuracy to the trial in the shared study and stop early when the study's pruner says so.

Only epochs of the student at its final size are reported (records with `after_cut`), as steps
0, 1, ... counted from the cut. Before that, distill_then_prune's student is still dense while
the other orders' are already pruned: reported, its early steps looked far better, and a median
pruner kept 79% of its trials against 26-29% of the others' (issue 18). A pruned trial carries
the constraint values of its cut (MACs, parameters; +inf for what a pruned run never measured).

The job talks to the study only through its storage URL, so it works wherever the launcher runs it
(in the worker's process, a joblib process, a SLURM node). It finds its trial from its own Hydra
config: `hydra.sweeper` (storage, study, pruner) and `hydra.job.num`, which the sweeper sets to
the trial's number (job folders are named by it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import ListConfig

from kdprune.run_record import VAL_ACC
from kdprune.sweeping import internals
from kdprune.sweeping.constraints import Bound, attach_constraints, parse_constraints
from kdprune.sweeping.storage import close_storage, open_storage
from kdprune.sweeping.sweeper_config import SWEEPER

TEACHER_STAGE = "teacher"  # every other stage trains the student
EpochHook = Callable[[dict[str, Any]], None] | None


def reported(record: dict[str, Any]) -> bool:
    """Whether an epoch's record goes to the pruner: student epochs after the cut only."""
    return record.get("stage") != TEACHER_STAGE and bool(record.get("after_cut"))


class EpochReporter:
    """Called with each epoch's record: reports student epochs after the cut, and raises
    TrialPruned (the trial's constraint values set from the cut's ledger) when told."""

    def __init__(self, trial: optuna.Trial, prune: bool, bounds: list[Bound] | None = None):
        self.trial, self.prune, self.step = trial, prune, 0
        self.bounds = bounds or []

    def __call__(self, record: dict[str, Any]) -> None:
        if not reported(record):
            return
        step, value = self.step, float(record[VAL_ACC])
        self.step += 1
        self.trial.report(value, step)
        if self.prune and self.trial.should_prune():
            attach_constraints(self.trial, self.bounds, record)
            raise optuna.TrialPruned(
                f"pruned after epoch {step + 1} after the cut (val_acc {value:.4f})"
            )


def _single_objective(direction: Any) -> bool:
    return not isinstance(direction, list | tuple | ListConfig) or len(direction) == 1


@contextmanager
def epoch_reporter(hydra_cfg: Any) -> Iterator[EpochReporter | None]:
    """The reporter of this job's trial, or None outside a kdprune Optuna sweep (and for
    multi-objective studies, which Optuna cannot prune). `hydra_cfg`: `HydraConfig.get()`, a
    DictConfig that Hydra annotates as its HydraConf dataclass."""
    sweeper: Any = hydra_cfg.get("sweeper") or {}  # a DictConfig node, or {} without one
    if (
        hydra_cfg.get("mode") != RunMode.MULTIRUN
        or sweeper.get("_target_") != SWEEPER
        or not sweeper.get("storage")
        or not _single_objective(sweeper.get("direction"))
    ):
        yield None
        return
    storage = open_storage(sweeper.storage)
    try:
        pruner = instantiate(sweeper.pruner, _execution_whitelist_=("optuna.pruners.*",))
        study = optuna.load_study(
            study_name=sweeper.study_name,
            storage=storage,
            pruner=pruner,
            sampler=optuna.samplers.RandomSampler(),  # never samples here: the cheapest to build
        )
        number = int(hydra_cfg.job.num)
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            internals.study_id(study), number
        )
        prune = not isinstance(pruner, optuna.pruners.NopPruner)
        bounds = parse_constraints(sweeper.get("constraints"))
        yield EpochReporter(optuna.Trial(study, trial_id), prune, bounds)
    finally:
        close_storage(storage)
