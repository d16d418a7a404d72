"""The end-of-run table says what the ledger measured, in words that cannot mislead."""

from __future__ import annotations

from helpers.fake_runs import fake_metrics

from kdprune.reporting import comparison_table


def _latency_row(table: str, batch: int) -> str:
    return next(line for line in table.splitlines() if line.startswith(f"CPU latency bs={batch}"))


def test_a_slower_compressed_model_is_called_slower() -> None:
    m = fake_metrics("joint", 0.5, 0, 0.9, 0.8)
    m |= {"cpu_latency_ms_bs1_before": 0.17, "cpu_latency_ms_bs1_after": 0.18,
          "cpu_latency_ms_bs64_before": 6.0, "cpu_latency_ms_bs64_after": 3.0,
          "dense_file_size_bytes": 850_000, "file_size_bytes": 220_000,
          "teacher_source": "cache"}  # fmt: skip
    table = comparison_table(m)
    assert _latency_row(table, 1).endswith("1.06x slower")
    assert _latency_row(table, 64).endswith("2.00x faster")
