"""Where the benchmarks read and write: the checkout they measure."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
