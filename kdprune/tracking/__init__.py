"""Experiment trackers: one small interface, so stages never know which backend is on."""

from kdprune.tracking.base import NullTracker, Tracker

__all__ = ["NullTracker", "Tracker"]
