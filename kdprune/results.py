"""The files a run writes: `metrics.json` is the contract every reader goes through."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write JSON atomically (temporary file, then rename): readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(_jsonable(data), fh, indent=2, sort_keys=False)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def write_metrics(run_dir: str | os.PathLike, metrics: dict[str, Any]) -> Path:
    """Write a run's `metrics.json`."""
    return write_json(Path(run_dir) / METRICS_FILE, metrics)


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """Read a run's `metrics.json` (given the file or its run folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    with open(path) as fh:
        return json.load(fh)
