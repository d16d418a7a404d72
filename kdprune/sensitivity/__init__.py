"""Sensitivity analysis (`kdprune sensitivity`): how much each prunable dependency group of a
trained model can lose, and per-layer ratios that spend a MACs budget where it hurts least."""

from kdprune.sensitivity.allocation import Allocation, allocate
from kdprune.sensitivity.analysis import COLUMNS, Cutter, scan
from kdprune.sensitivity.command import DEFAULT_RATIOS, SensitivityResult, run_sensitivity
from kdprune.sensitivity.groups import PrunableGroup, prunable_groups
from kdprune.sensitivity.outputs import CSV_FILE, PLOT_FILE, RATIOS_FILE

__all__ = [
    "COLUMNS",
    "CSV_FILE",
    "DEFAULT_RATIOS",
    "PLOT_FILE",
    "RATIOS_FILE",
    "Allocation",
    "Cutter",
    "PrunableGroup",
    "SensitivityResult",
    "allocate",
    "prunable_groups",
    "run_sensitivity",
    "scan",
]
