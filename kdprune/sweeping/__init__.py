"""Sweeps: the resumable Optuna sweeper (sweep definitions live in `sweeps/`)."""

from kdprune.sweeping.optuna_sweeper import (
    ResumableOptunaSweeper,
    finished_trials,
    register,
    resume_study,
)

__all__ = ["ResumableOptunaSweeper", "finished_trials", "register", "resume_study"]
