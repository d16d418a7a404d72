"""What every stage of a run shares: config, device, data, tracker, the timings and history it
records. Stages return what they measure; nothing is left here for a later stage to find."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from kdprune.data import Loaders
from kdprune.distributed import Ranks
from kdprune.engine import Stage, evaluate, seed_everything
from kdprune.engine.checkpoints import RunState
from kdprune.errors import ConfigError
from kdprune.faults import fault_hook
from kdprune.instantiation import instantiate
from kdprune.metrics import ledger
from kdprune.models import build
from kdprune.models.common import example_inputs
from kdprune.run_record import VAL_ACC, VAL_LOSS
from kdprune.tracking import Tracker

log = logging.getLogger("kdprune")


@dataclass
class RunContext:
    """The shared settings of one run, passed explicitly to every stage (no globals)."""

    cfg: DictConfig
    device: torch.device
    loaders: Loaders
    tracker: Tracker
    run_dir: Path
    data_identity: str = ""  # which data set files the loaders read (see Splits.identity)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, recorded
    history: list[dict] = field(default_factory=list)  # one record per epoch, recorded
    on_epoch: Callable[[dict[str, Any]], None] | None = None  # a sweep trial's reporter, if any
    # The student's final cut, once made: its size ledger in a sweep (the pruner's constraint
    # values), {} elsewhere; None before the cut. Epoch records say `after_cut`.
    cut: dict[str, Any] | None = None
    ranks: Ranks = field(default_factory=Ranks)  # this process's place in a run over several
    state: RunState | None = None  # the training state saved after each epoch (None: not kept)

    @property
    def example_inputs(self) -> torch.Tensor:
        """One input of the data set's shape, on the device (for MACs counting and tracing)."""
        return example_inputs(self.cfg.dataset, device=self.device)

    def mark_cut(self, dense: nn.Module, pruned: nn.Module) -> None:
        """The student has its final size: later epochs are `after_cut`; in a sweep, keep the size
        ledger of the cut (MACs, parameters; no timing) for a pruned trial's constraint values."""
        if self.on_epoch is None:
            self.cut = {}
            return
        # zeros, not random draws: counting must not move the global generator
        inputs = example_inputs(self.cfg.dataset, zeros=True)
        dense, pruned = (copy.deepcopy(m).cpu().eval() for m in (dense, pruned))
        self.cut = ledger(dense, pruned, inputs, latency_batch_sizes=())

    def record(self, entry: dict[str, Any]) -> None:
        """Keep one epoch's record, send it to the tracker, and log it as one line."""
        entry = {**entry, "after_cut": self.cut is not None}
        self.history.append(entry)
        self.tracker.log(entry)
        log.info(
            "%s epoch %d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1fs",
            entry["stage"],
            entry["epoch"],
            entry["train_loss"],
            entry["train_acc"],
            entry[VAL_LOSS],
            entry[VAL_ACC],
            entry["seconds"],
        )
        if self.on_epoch is not None:  # may raise optuna.TrialPruned: the sweep stops this run
            self.on_epoch({**entry, **(self.cut or {})})

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Add the wall time of a block to `timings[name]` (seconds)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def seed(self, offset: int) -> None:
        """Reseed before a stage, so its numbers do not depend on whether earlier stages ran or
        came from the cache."""
        seed_everything(int(self.cfg.seed) * 1000 + offset)

    def stage(
        self,
        name: str,
        epochs: int,
        objective,
        optimizer: DictConfig | None = None,
        lr_scheduler: DictConfig | None = None,
        select_on_val: bool = True,
        **kwargs: Any,
    ) -> Stage:
        """A training stage with the run's trainer settings; it ends on its best-validation epoch
        only if `select_on_val` and `trainer.select_epoch` is best_val (else on its last)."""
        t = self.cfg.trainer
        return Stage(
            name=name,
            epochs=int(epochs),
            objective=objective,
            optimizer=instantiate(optimizer if optimizer is not None else self.cfg.optimizer),
            lr_schedule=instantiate(
                lr_scheduler if lr_scheduler is not None else self.cfg.lr_scheduler
            ),
            device=self.device,
            memory_format=memory_format(t.channels_last, self.device),
            amp=bool(t.amp),
            progress=progress_setting(t.progress) if self.ranks.is_main else False,
            select_on_val=select_on_val and t.get("select_epoch", "best_val") == "best_val",
            max_batches=t.max_batches,
            log=self.record,
            on_step=fault_hook(name, self.ranks.rank),
            state=self.state,
            **kwargs,
        )

    def evaluate(
        self, model: nn.Module, split: str, keep_predictions: bool = False
    ) -> dict[str, Any]:
        """Accuracy and loss of a model on `val` or `test`, timed as the `evaluate` stage (and
        each image's predicted class with `keep_predictions`)."""
        with self.timed("evaluate"):
            return self.score(model, split, keep_predictions)

    def score(self, model: nn.Module, split: str, keep_predictions: bool = False) -> dict[str, Any]:
        """`evaluate` without timing, for use inside another timed stage (no double counting)."""
        loader = getattr(self.loaders, split)
        t = self.cfg.trainer
        return evaluate(model, loader, self.device, bool(t.amp), t.max_batches, keep_predictions)


def progress_setting(value: Any) -> bool | None:
    """`trainer.progress`: true / false, or auto (None: bars on a terminal, one log line per
    epoch otherwise — a file or CI log gets no bar redraws)."""
    return None if value in (None, "auto") else bool(value)


def memory_format(channels_last: bool | str, device: torch.device) -> torch.memory_format:
    """`trainer.channels_last`: true uses the channels_last format on CUDA (always faster there),
    `always` on the CPU too (on torch 2.14 a small conv net with max pooling trains about a
    quarter faster on one x86 thread; the float sums then round differently, so numbers move),
    false never."""
    wanted = channels_last == "always" or (channels_last is True and device.type == "cuda")
    return torch.channels_last if wanted else torch.contiguous_format


def build_model(
    model_cfg: DictConfig, device: torch.device, channels_last: bool | str = True
) -> nn.Module:
    """Instantiate a model config on the device, in `memory_format(channels_last, device)`."""
    model = build(model_cfg).to(device)
    fmt = memory_format(channels_last, device)
    return model.to(memory_format=fmt) if fmt is torch.channels_last else model


def read_state_dict(path: str, what: str) -> dict[str, torch.Tensor]:
    """A user's state_dict file, read as data only (weights_only), with one-line errors."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{what} checkpoint {str(file)!r} does not exist or is not a file")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except EOFError:
        raise ConfigError(f"{what} checkpoint {str(file)!r} is empty or cut short") from None
    except Exception as err:  # torch.load raises many types for the same user-level problem
        if "Weights only load failed" in str(err):
            raise ConfigError(
                f"{what} checkpoint {str(file)!r} holds pickled Python objects (a whole saved "
                "model?); kdprune reads weights only: save model.state_dict() instead"
            ) from None
        raise ConfigError(f"{what} checkpoint {str(file)!r} is not a PyTorch file") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(
            f"{what} checkpoint {str(file)!r} holds a {type(state).__name__}, not a state_dict"
        )
    return state


def state_dict_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """How `state` does not fit `model` (missing / unexpected keys, shapes), or None."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing:
        return f"{len(missing)} of the model's weights are missing (first: {missing[0]})"
    if unexpected:
        return f"{len(unexpected)} weights the model does not have (first: {unexpected[0]})"
    if shapes:
        k = shapes[0]
        return (
            f"{len(shapes)} weights differ in shape (first: {k}, "
            f"{list(state[k].shape)} in the file, {list(own[k].shape)} in the model)"
        )
    return None


def load_state_dict_file(model: nn.Module, path: str, what: str) -> None:
    """Load a user's state_dict file (data only) into a model, with one-line errors."""
    state = read_state_dict(path, what)
    mismatch = state_dict_mismatch(model, state)
    if mismatch:
        raise ConfigError(
            f"{what} checkpoint {path!r} does not fit {type(model).__name__}: {mismatch}"
        )
    model.load_state_dict(state)
