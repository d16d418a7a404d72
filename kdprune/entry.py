"""Hydra's entry point, kept light: `--help`, `--cfg job` and composition need no torch, so the
application (`kdprune.app`, which loads torch and the models) is imported only when a run starts."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from kdprune.instantiation import TRUSTED_TARGETS
from kdprune.paths import CONF_DIR


@hydra.main(
    config_path=str(CONF_DIR), config_name="config", execution_whitelist=list(TRUSTED_TARGETS)
)
def hydra_task(cfg: DictConfig) -> float | tuple[float, ...] | None:
    """Hydra's task function: `kdprune.app.task` on the composed config."""
    from kdprune.app import task

    return task(cfg)


def hydra_main() -> None:
    """Hydra's command line (runs and sweeps); the logging Hydra set up for it is undone after."""
    with logging_restored("kdprune", "hydra"):
        hydra_task()


@contextmanager
def logging_restored(*names: str) -> Iterator[None]:
    """The root logger and the loggers `names` as they were before the block, after it.

    Hydra's job logging (`logging.config.dictConfig`) gives the root logger a console handler on
    the sys.stdout of that moment and a file handler on the job's log, and never takes them off:
    in a process that goes on (a test session, a notebook, a script calling the command twice)
    later records went to a closed stream ("--- Logging error ---") and to an old job's log.
    Their handlers, level, propagation and disabled flag are put back, and handlers added in the
    block are closed; every other logger that existed gets its disabled flag back (a config
    with `disable_existing_loggers: true` turns them off).
    """
    manager = logging.Logger.manager
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in names)]
    saved = [(lg, list(lg.handlers), lg.level, lg.propagate, lg.disabled) for lg in loggers]
    existing = [lg for lg in manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    others = [(lg, lg.disabled) for lg in existing]
    try:
        yield
    finally:
        for lg, handlers, level, propagate, disabled in saved:
            for handler in [h for h in lg.handlers if h not in handlers]:
                handler.close()
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate, lg.disabled = propagate, disabled
        for lg, disabled in others:
            lg.disabled = disabled


def register_sweeper() -> None:
    """Make kdprune's Optuna sweeper known to Hydra (it imports Optuna: only runs need it)."""
    from kdprune.sweeping.optuna_sweeper import register

    register()


class DivergedRuns(Callback):
    """Ends a grid multirun in which runs diverged with one summary line and exit code 1, e.g.
    `1 of 3 runs diverged: <dir> (distill epoch 1 step 2)` (conf/config.yaml's hydra.callbacks).
    A search (an Optuna sweep) gets the line only: its diverged trials are failed trials."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Print the summary when any run below the sweep folder recorded `diverged`, and exit 1
        after a grid (a SystemExit: Hydra turns a callback's exceptions into warnings)."""
        from kdprune.results import METRICS_FILE, diverged_runs, where_diverged
        from kdprune.sweeping.internals import BASIC_SWEEPER

        sweep = Path(str(config.hydra.sweep.dir))
        diverged = diverged_runs(sweep) if sweep.is_dir() else []
        if not diverged:
            return
        runs = {p.parent for p in sweep.rglob(METRICS_FILE)} | {
            p.parent for p in sweep.rglob(".hydra")
        }
        listed = ", ".join(f"{d} ({where_diverged(m)})" for d, m in diverged)
        print(f"kdprune: {len(diverged)} of {len(runs)} runs diverged: {listed}", file=sys.stderr)
        if config.hydra.sweeper.get("_target_") == BASIC_SWEEPER:
            sys.exit(1)
