"""A run's training state, saved after every epoch so that a stopped run resumes (preemption).

A batch scheduler stops a job with SIGTERM; the same command then finds the state its first
attempt left and goes on from the last finished epoch, ending with the numbers of a run that was
never stopped. The state of one run lives in a folder of its own (`RunState`, keyed by the
resolved config and the world size), one file per training stage (`fit` call) of the run:

- a stage the stopped run finished holds the model it ended with, the random number generators'
  states, the epoch records and what the pruner learned (its `carried()` objects: movement
  scores): the rerun restores it instead of training it again;
- the stage it had begun holds the state after its last finished epoch (model, optimizer, the
  best epoch so far, generators, records, the KD loss's adapters, what the pruner learned): the
  rerun goes on from the next epoch.

Everything between stages (pruning, the teacher, calibration) runs again: it is deterministic
given the restored weights and generators, and cheap next to training. A stage whose step hooks
change the architecture while it trains (`schedule=joint`) keeps no state and runs again from
its start (the same numbers; no time saved). Stages are told apart by name, the architecture
they start from and how many came before with both. Files hold data only (tensors, numbers);
they are written atomically by rank 0 alone and read with `weights_only`.
"""

from __future__ import annotations

import logging
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdprune.cache import atomic_save
from kdprune.distributed import architecture_hash

log = logging.getLogger("kdprune")

FORMAT = 2  # 2: what the pruner learned is kept by name (its `carried()`)
PLAIN = (torch.Tensor, int, float, str, bool, type(None))


class RunState:
    """The saved training state of one run: `folder`, one file per stage, read once at start
    (what this run resumes from does not change as it saves)."""

    def __init__(
        self, folder: str | Path, writer: bool, device: torch.device, created: Sequence[Path] = ()
    ):
        self.folder, self.writer, self.device = Path(folder), writer, device
        self.created = list(created)  # the folder's parents this run made, removed with it
        self.counts: dict[str, int] = {}  # stage key -> stages with that key so far
        self.saved = {p.stem: _read(p) for p in sorted(self.folder.glob("*.pt"))}
        self.saved = {k: v for k, v in self.saved.items() if v is not None}

    def stage(self, name: str, model: nn.Module) -> StageCheckpoint:
        """The checkpoint of the next stage called `name` that starts from `model`."""
        key = f"{name}-{architecture_hash(model)}"
        number = self.counts.get(key, 0)
        self.counts[key] = number + 1
        slot = f"{key}-{number}"
        return StageCheckpoint(self, slot, self.saved.get(slot))

    def write(self, slot: str, entry: dict[str, Any]) -> None:
        """Save one stage's entry (rank 0 only; the others write nothing)."""
        if self.writer:
            atomic_save({"format": FORMAT, **entry}, self.folder / f"{slot}.pt")

    def discard(self) -> None:
        """Remove the saved state once the run has its result (rank 0 only)."""
        if self.writer:
            shutil.rmtree(self.folder, ignore_errors=True)
            for parent in self.created:  # deepest first; one in use by another run stays
                try:
                    parent.rmdir()
                except OSError:
                    break


def missing_folders(folder: Path) -> list[Path]:
    """The folders `folder.mkdir(parents=True)` would make, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    return missing


def _read(path: Path) -> dict[str, Any] | None:
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a file cut short, or not ours: start that stage over
        log.warning("training state %s is unreadable (%s); that stage starts over", path, err)
        return None
    return entry if isinstance(entry, dict) and entry.get("format") == FORMAT else None


class StageCheckpoint:
    """The saved state of one `fit` call: `saved` is what the stopped run left (or None)."""

    def __init__(self, run: RunState, slot: str, saved: dict[str, Any] | None):
        self.run, self.slot, self.saved = run, slot, saved

    def finished(self, model: nn.Module, stage) -> list[dict] | None:
        """Restore a stage the stopped run finished into `model`; its records, else None."""
        saved = self.saved
        if saved is None or not saved["finished"] or saved["epochs"] != stage.epochs:
            return None
        if not restorable(stage):
            return None
        model.load_state_dict(saved["model"])
        _restore_learned(stage, saved["learned"], self.run.device)
        set_rng_state(saved["rng"])
        log.info("%s: restored from the training state (%d epochs)", stage.name, stage.epochs)
        return saved["history"]

    def resume(self, model: nn.Module, optimizer: torch.optim.Optimizer, stage):
        """The progress of a stage the stopped run had begun, restored into model and optimizer
        (and the objective's adapters); a fresh start when there is none."""
        from kdprune.engine.train import Progress, extra_parameters

        saved = self.saved
        if saved is None or saved["finished"] or saved["epochs"] != stage.epochs:
            return Progress()
        if not restorable(stage):
            return Progress()
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        with torch.no_grad():
            for param, value in zip(extra_parameters(stage), saved["extra"], strict=True):
                param.copy_(value)
        _restore_learned(stage, saved["learned"], self.run.device)
        set_rng_state(saved["rng"])
        log.info("%s: resumed after epoch %d of %d", stage.name, saved["epoch"], stage.epochs)
        return Progress(saved["epoch"], saved["history"], saved["best_acc"], saved["best_state"])

    def save_epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer, stage, progress):
        """Save the state after an epoch (a stage whose architecture changes keeps none)."""
        from kdprune.engine.train import extra_parameters

        if not (self.run.writer and restorable(stage)):
            return
        entry = {
            "finished": False,
            "epochs": stage.epochs,
            "epoch": progress.epoch,
            "history": progress.history,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "extra": [p.detach() for p in extra_parameters(stage)],
            "best_acc": progress.best_acc,
            "best_state": progress.best_state,
            "learned": _learned(stage),
            "rng": rng_state(),
        }
        self.run.write(self.slot, entry)

    def save_finished(self, model: nn.Module, stage, history: list[dict]) -> None:
        """Save what the finished stage leaves behind, for a rerun to restore."""
        if not (self.run.writer and restorable(stage)):
            return
        entry = {
            "finished": True,
            "epochs": stage.epochs,
            "history": history,
            "model": model.state_dict(),
            "learned": _learned(stage),
            "rng": rng_state(),
        }
        self.run.write(self.slot, entry)


def _learners(stage) -> dict[str, Any] | None:
    """What the stage's after-backward hook grows while it trains, by name: the `carried()`
    objects of the pruner whose `training_hook` it is (movement scores, a BN-scale
    regularizer), or the object whose method it is; {} without a hook; None for a hook that is
    no object's method (its state cannot be told)."""
    if stage.after_backward is None:
        return {}
    owner = getattr(stage.after_backward, "__self__", None)
    if owner is None:
        return None
    carried = getattr(owner, "carried", None)
    return dict(carried()) if callable(carried) else {"hook": owner}


def restorable(stage) -> bool:
    """Whether a stage's state can be saved and restored as data: its architecture stays put
    while it trains, and what its after-backward hook learns is plain data."""
    if stage.step_hooks:
        return False
    learners = _learners(stage)
    return learners is not None and all(_plain(vars(obj)) for obj in learners.values())


def _plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return isinstance(value, PLAIN)


def _learned(stage) -> dict[str, Any]:
    return {name: dict(vars(obj)) for name, obj in (_learners(stage) or {}).items()}


def _restore_learned(stage, learned: dict[str, Any], device: torch.device) -> None:
    for name, obj in (_learners(stage) or {}).items():
        vars(obj).update(_to_device(learned[name], device))


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value


def rng_state() -> dict[str, Any]:
    """Every random number generator a run draws from (Python, NumPy, torch CPU and CUDA), as
    data a `weights_only` load reads back."""
    numpy_state = np.random.get_state()  # the legacy tuple (a dict only with legacy=False)
    if isinstance(numpy_state, dict):
        raise TypeError("NumPy gave its random state as a dict, not the legacy tuple")
    name, keys, pos, has_gauss, gauss = numpy_state
    version, state, python_gauss = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },  # fmt: skip
        "python": {"version": version, "state": list(state), "gauss": python_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Put every generator back where `rng_state` found it."""
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
