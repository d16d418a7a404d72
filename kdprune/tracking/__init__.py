"""Experiment trackers: one small interface, so stages never know which backend is on."""

from kdprune.tracking.sweep_callback import WandbSweepCallback
from kdprune.tracking.tracker import NullTracker, Tracker
from kdprune.tracking.wandb_tracker import WandbTracker

__all__ = ["NullTracker", "Tracker", "WandbSweepCallback", "WandbTracker"]
