"""A content-addressed cache of trained teachers, safe under concurrent processes.

A teacher is trained once per (architecture, data set, training config, seed): the key is a hash of
exactly those settings. Two processes that need the same teacher at once take a file lock, so one
trains and the other loads. Files are written to a temporary name and renamed, so a killed run
never leaves a file that a later run trusts; a file that does not load is reported and retrained.
The ranks of one run over several processes train a missing teacher together, once: rank 0 holds
the lock and writes the file, every rank then loads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch import nn

from kdprune.distributed import Ranks
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


def _load(path: Path, spec: dict[str, Any], repair: bool = True) -> dict[str, Any] | None:
    """The cached entry at `path`, or None when it is missing, unreadable or for another spec
    (then removed, with `repair`, so that it is trained again)."""
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
        if repair:
            path.unlink(missing_ok=True)
        return None


def _save(path: Path, spec: dict[str, Any], metrics: dict[str, Any], model: nn.Module) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    entry = {"format": FORMAT, "spec": _plain(spec), "metrics": metrics, "state_dict": state}
    atomic_save(entry, path)


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
        ranks: Ranks | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Load the teacher for `spec` into `model`, training it with `train(model)` on a miss.

        Returns (the metrics stored with it, whether the cache was hit).
        """
        if ranks is not None and ranks.active:
            return self._get_or_train_together(name, spec, model, train, ranks)
        path = self.path(name, spec)
        entry = _load(path, spec)
        if entry is None:
            with FileLock(str(path) + ".lock"):
                entry = _load(path, spec)  # another process may have trained it while we waited
                if entry is None:
                    log.info("training teacher %s (cache miss: %s)", name, path)
                    metrics = train(model)
                    _save(path, spec, metrics, model)
                    return metrics, False
        log.info("teacher %s loaded from cache %s", name, path)
        model.load_state_dict(entry["state_dict"])
        return entry["metrics"], True

    def _get_or_train_together(
        self,
        name: str,
        spec: dict[str, Any],
        model: nn.Module,
        train: Callable[[nn.Module], dict[str, Any]],
        ranks: Ranks,
    ) -> tuple[dict[str, Any], bool]:
        """`get_or_train` for the ranks of one run: rank 0 holds the file lock (another job
        needing this teacher waits) and says whether the file is there; on a miss every rank
        trains (each on its share of the data) and rank 0 writes the file; every rank loads it."""
        path = self.path(name, spec)
        with FileLock(str(path) + ".lock") if ranks.is_main else nullcontext():
            hit = ranks.broadcast_object(_load(path, spec) is not None if ranks.is_main else None)
            if not hit:
                n = ranks.world_size
                log.info("training teacher %s on %d ranks (cache miss: %s)", name, n, path)
                metrics = train(model)
                if ranks.is_main:
                    _save(path, spec, metrics, model)
            ranks.barrier()
        entry = _load(path, spec, repair=False)
        if entry is None:
            raise FileNotFoundError(f"rank {ranks.rank} cannot read the teacher file {path}")
        if hit:
            log.info("teacher %s loaded from cache %s", name, path)
        model.load_state_dict(entry["state_dict"])
        return entry["metrics"], hit
