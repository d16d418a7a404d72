"""A content-addressed cache of trained teachers, safe under concurrent processes.

A teacher is trained once per (architecture, data set, training config, seed): the key is a hash of
exactly those settings. Two processes that need the same teacher at once take a file lock, so one
trains and the other loads. Files are written to a temporary name and renamed, so a killed run
never leaves a file that a later run trusts; a file that does not load is reported and retrained.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch import nn

from kdprune.results import atomic_write

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the meaning of a cached file changes, so old entries stop matching


def cache_key(spec: dict[str, Any]) -> str:
    """Stable hash of a JSON-serialisable spec (key order does not matter)."""
    blob = json.dumps({"format": FORMAT, **spec}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over `path`."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def _plain(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as it reads back from a file: JSON types only."""
    return json.loads(json.dumps(spec, default=str))


def _load(path: Path, spec: dict[str, Any]) -> dict[str, Any] | None:
    """The cached entry at `path`, or None when it is missing, unreadable or for another spec."""
    if not path.exists():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        if entry.get("format") != FORMAT or entry.get("spec") != _plain(spec):
            raise ValueError("its settings do not match its name")
        if not isinstance(entry.get("state_dict"), dict):
            raise ValueError("it holds no state_dict")
        return entry
    except Exception as err:  # any unreadable file is treated the same way: retrain, never trust
        log.warning("teacher cache file %s is corrupt (%s); retraining it", path, err)
        path.unlink(missing_ok=True)
        return None


class TeacherCache:
    """Trained teachers under `root/teachers/<name>-<key>.pt`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, name: str, spec: dict[str, Any]) -> Path:
        return self.root / "teachers" / f"{name}-{cache_key(spec)}.pt"

    def get_or_train(
        self,
        name: str,
        spec: dict[str, Any],
        model: nn.Module,
        train: Callable[[nn.Module], dict[str, Any]],
    ) -> tuple[dict[str, Any], bool]:
        """Load the teacher for `spec` into `model`, training it with `train(model)` on a miss.

        Returns (the metrics stored with it, whether the cache was hit).
        """
        path = self.path(name, spec)
        entry = _load(path, spec)
        if entry is None:
            with FileLock(str(path) + ".lock"):
                entry = _load(path, spec)  # another process may have trained it while we waited
                if entry is None:
                    log.info("training teacher %s (cache miss: %s)", name, path)
                    metrics = train(model)
                    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
                    atomic_save(
                        {
                            "format": FORMAT,
                            "spec": _plain(spec),
                            "metrics": metrics,
                            "state_dict": state,
                        },
                        path,
                    )
                    return metrics, False
        log.info("teacher %s loaded from cache %s", name, path)
        model.load_state_dict(entry["state_dict"])
        return entry["metrics"], True
