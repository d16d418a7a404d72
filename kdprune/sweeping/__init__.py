"""Sweeps: Optuna studies shared by many workers (sweep definitions live in `sweeps/`).

Importing this package is cheap: it registers the sweeper's Hydra config (`sweeper_config.py`); the
sweeper itself (`optuna_sweeper.py`) is imported by the app.
"""

from kdprune.sweeping import sweeper_config as sweeper_config
