"""A stub launcher for the sequential verdict's tests: it writes a fake finished run per (arm,
seed), test accuracy planted per order, without training; a test can make some runs fail and
hook each launch (to hold a worker inside it, with its locks taken)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from helpers.fake_runs import fake_metrics
from kdprune.reporting.sequential import planned_looks
from kdprune.reporting.verdicts import Options
from kdprune.results import write_metrics
from kdprune.sweeping.until_decided import SEED_FOLDER, Arm, Plan

MARGIN = 0.0025  # 0.25 points: at the cap of 16 seeds and sd 0.2 points, TOST's standard error
# is 0.05 points, so an equivalence within 0.25 points is reachable (about 2.5 standard errors
# spare at the last look's alpha of 0.014); a smaller margin would often stay undecided.
SD = 0.002  # 0.2 points
ORDER_ACC = {"prune_then_distill": 0.90, "distill_then_prune": 0.90, "joint": 0.85}
ARMS = [Arm((f"schedule={order}",)) for order in ORDER_ACC]


def default_plan() -> Plan:
    """Start 4 seeds, 2 more per look, cap 16; paired test, margin 0.25 points."""
    return Plan(planned_looks(4, 2, 16), options=Options(analysis="paired", margin=MARGIN))


def write_run(arm: Arm, seed: int, folder: Path) -> None:
    """The finished run the stub writes for (arm, seed): the same numbers whoever writes it."""
    order = dict(o.split("=") for o in arm.overrides)["schedule"]
    rng = np.random.default_rng([seed, list(ORDER_ACC).index(order)])
    test = ORDER_ACC[order] + rng.normal(0, SD)
    write_metrics(folder / arm.name / SEED_FOLDER.format(seed=seed),
                  fake_metrics(order, 0.5, seed, 0.9, test))  # fmt: skip


class StubLauncher:
    """Writes `write_run` for each seed of a launch, except the (arm name, seed) runs in
    `fail` (a crash: nothing written); then calls `after(self)` if given, still inside the
    launch (the worker holds the launch's locks while it runs)."""

    def __init__(
        self,
        fail: Sequence[tuple[str, int]] = (),
        after: Callable[[StubLauncher], None] | None = None,
    ) -> None:
        self.calls: list[tuple[str, tuple[int, ...]]] = []
        self.fail, self.after = set(fail), after

    def __call__(self, arm: Arm, seeds: Sequence[int], folder: Path) -> None:
        self.calls.append((arm.name, tuple(seeds)))
        for seed in seeds:
            if (arm.name, seed) not in self.fail:
                write_run(arm, seed, folder)
        if self.after is not None:
            self.after(self)

    @property
    def runs(self) -> list[tuple[str, int]]:
        """Every (arm name, seed) launched, in order, repeats kept."""
        return [(name, seed) for name, seeds in self.calls for seed in seeds]
