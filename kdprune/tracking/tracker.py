"""The tracker interface every backend (none, wandb) implements."""

from __future__ import annotations

from typing import Any, Protocol


class Tracker(Protocol):
    """Receives per-epoch history and the run's final ledger."""

    def log(self, record: dict[str, Any]) -> None: ...

    def summary(self, metrics: dict[str, Any]) -> None: ...

    def finish(self, failed: bool = False) -> None: ...


class NullTracker:
    """Tracks nothing: `logger=none`. The local files (metrics.json, the log) are written anyway."""

    def __init__(self, **_: Any):
        pass

    def log(self, record: dict[str, Any]) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def finish(self, failed: bool = False) -> None:
        pass
