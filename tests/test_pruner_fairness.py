"""The acceptance test of a fair search (issue 18): 12-trial studies that search the order, with
the shipped median pruner, replayed on recorded digits histories through the shipped reporter —
no order's trials are pruned at more than twice the rate of another's. The same replay with every
student epoch reported (the old reporter) is unfair, so the test can tell the two apart.

`tests/data/digits_histories.json` holds 18 real runs (6 sampled configurations x 3 orders) made by
`python -m benchmarks.digits_histories`.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import optuna
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.trial import TrialState

from kdprune.schedules.names import ORDER_NAMES
from kdprune.sweeping.sweeper_config import MedianPrunerConf
from kdprune.sweeping.trial_link import EpochReporter

HISTORIES = Path(__file__).parent / "data" / "digits_histories.json"
ORDERS = ORDER_NAMES  # the natural sequence: prune_then_distill, distill_then_prune, joint
STUDIES, TRIALS = 200, 12


def _runs() -> list[dict]:
    return json.loads(HISTORIES.read_text())["runs"]


def _old(record: dict) -> dict:
    """What the reporter saw before issue 18: every student epoch, dense or not."""
    return {**record, "after_cut": True}


def replay(
    runs: list[dict], seen=lambda r: r, prune: bool = True, studies: int = STUDIES
) -> tuple[dict[str, float], dict[str, float]]:
    """Over `studies` simulated 12-trial studies drawing runs at random (a seeded draw: the same
    runs in the same order every call), the share of each order's trials the shipped pruner
    prunes, and the share of studies whose best trial is of each order."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = random.Random(0)
    pruned, total, best = Counter(), Counter(), Counter()
    pruner = OmegaConf.structured(MedianPrunerConf)  # the sweep's median pruner, as configured
    for _ in range(studies):
        study = optuna.create_study(
            direction="maximize",
            pruner=instantiate(pruner, _execution_whitelist_=("optuna.pruners.*",)),
        )
        for _ in range(TRIALS):
            run = rng.choice(runs)
            trial = study.ask()
            trial.set_user_attr("order", run["order"])
            reporter = EpochReporter(trial, prune=prune)
            total[run["order"]] += 1
            try:
                for record in run["history"]:
                    reporter(seen(record))
            except optuna.TrialPruned:
                pruned[run["order"]] += 1
                study.tell(trial, state=TrialState.PRUNED)
                continue
            study.tell(trial, run["val_acc"])
        best[study.best_trial.user_attrs["order"]] += 1
    rates = {order: pruned[order] / total[order] for order in ORDERS}
    return rates, {order: best[order] / studies for order in ORDERS}


@pytest.fixture(scope="module")
def runs() -> list[dict]:
    runs = _runs()
    assert {r["order"] for r in runs} == set(ORDERS) and len(runs) == 18
    return runs


@pytest.fixture(scope="module")
def unpruned(runs) -> dict[str, float]:
    """How often each order has the best trial in the same studies without a pruner."""
    return replay(runs, prune=False)[1]


def _shift(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(a[order] - b[order]) for order in ORDERS)


def test_no_order_is_pruned_at_twice_the_rate_of_another(runs, unpruned) -> None:
    rates, winners = replay(runs)
    assert sum(rates.values()) > 0, rates  # the pruner does prune: fairness is not vacuous
    assert max(rates.values()) <= 2 * min(rates.values()), rates
    # and which order the best trial has moves little from the same studies without a pruner
    assert _shift(winners, unpruned) <= 0.1, (winners, unpruned)


def test_reporting_dense_epochs_was_unfair(runs, unpruned) -> None:
    rates, winners = replay(runs, seen=_old)
    assert max(rates.values()) > 2 * min(rates.values()), rates
    assert min(rates, key=rates.get) == "distill_then_prune", rates  # its dense epochs look good
    assert _shift(winners, unpruned) > 0.1, (winners, unpruned)
