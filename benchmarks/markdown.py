"""Markdown cells shared by the figures' sections and BENCHMARKS.md's summary table."""

from __future__ import annotations

from typing import Any

SHOWN = {">=": "≥ ", "<=": "≤ ", "<": "< ", "==": ""}


def times(value: float) -> str:
    """A ratio: 0.97 is "0.97×"."""
    return f"{value:.2f}×"


def pct(value: float) -> str:
    """A share: 0.027 is "2.7%"."""
    return f"{100 * value:.1f}%"


def target_cell(target: str, unit: str = "") -> str:
    """A target: ">= 0.95" with unit "×" is "≥ 0.95×"; with unit "%", "< 0.05" is "< 5%"."""
    op, limit = target.split()
    value = 100 * float(limit) if unit == "%" else float(limit)
    return f"{SHOWN[op]}{value:g}{unit}"


def met_cell(record: dict[str, Any], key: str) -> str:
    """Whether the record's target `key` is met, with a miss in bold."""
    return "yes" if record["met"][key] else "**no**"


def load_cell(record: dict[str, Any]) -> str:
    """The load averages before → after the figure."""
    return (
        " / ".join(f"{x:.2f}" for x in record["loadavg_before"])
        + " → "
        + " / ".join(f"{x:.2f}" for x in record["loadavg"])
    )
