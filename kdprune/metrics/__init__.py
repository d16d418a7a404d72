"""Measurements for the run ledger: size (params, MACs, sparsity, channels, file) and latency."""

from kdprune.metrics.latency import cpu_latency_ms
from kdprune.metrics.latency_target import RUNTIMES, LatencyTarget, latency_record
from kdprune.metrics.ledger import (
    CPU_KEYS,
    LATENCY_BATCH_SIZES,
    LEDGER_KEYS,
    latency_keys,
    ledger,
)
from kdprune.metrics.size import (
    channel_ratio,
    conv_channels,
    file_size_bytes,
    nonzero_fraction,
    weight_sparsity,
)
from kdprune.models.counting import count_macs_params

__all__ = [
    "CPU_KEYS",
    "LATENCY_BATCH_SIZES",
    "LEDGER_KEYS",
    "RUNTIMES",
    "LatencyTarget",
    "channel_ratio",
    "conv_channels",
    "count_macs_params",
    "cpu_latency_ms",
    "file_size_bytes",
    "latency_keys",
    "latency_record",
    "ledger",
    "nonzero_fraction",
    "weight_sparsity",
]
