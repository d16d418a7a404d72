"""The sequential verdict's default design, kept light (no numpy, no reporting): the command
line's defaults and choices read it without importing the statistics."""

START, BATCH, CAP = 4, 2, 16  # seeds per arm at look 1, added per look, at most
SPENDING_NAMES = ("obrien-fleming", "pocock")  # kdprune.reporting.sequential.SPENDING's keys
