"""One run over several processes (`torchrun --nproc_per_node=N -m kdprune ...`).

PyTorch's own engine does the work (`torch.distributed`, `DistributedDataParallel`); this module
holds what a run needs of it, in one place:

- `Ranks`: which process this is and the collectives a run uses. A plain run is one process,
  `Ranks()`, whose methods do nothing and never touch `torch.distributed`.
- `start`: under torchrun, before Hydra starts (`kdprune.launch.start_rank`), the process group
  is started from torchrun's environment (gloo on CPU, NCCL on CUDA, with a timeout on every
  collective); every rank is then given rank 0's run folder (`hydra_overrides`), and ranks other
  than 0 Hydra settings that write no file.
- `Ranks.agree_on_config`: before any work, the hash of every rank's composed config is
  all-gathered: a run whose ranks composed different configs stops in one line, naming a key.
- `Ranks.agree_on_model`: after every change of the architecture, every rank's widths, ranks
  and masks are compared (a hash, all-gathered): a run whose ranks cut differently stops in one
  line; then rank 0's weights are copied to every rank.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from kdprune.errors import ConfigError, FaultError
from kdprune.results import config_sha256, flatten

log = logging.getLogger("kdprune")

BACKENDS = ("auto", "gloo", "nccl")


class RanksDisagree(FaultError):
    """The ranks of one run hold different models (a cut that was not the same everywhere)."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: rank, world size, local rank (its GPU) and backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        """True when the run is spread over more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that writes files, logs to a tracker and times the model."""
        return self.rank == 0

    def record(self) -> dict[str, Any]:
        """The `world_size` and `backend` entries of metrics.json (backend null: one process)."""
        return {"world_size": self.world_size, "backend": self.backend}

    def device(self, device: torch.device) -> torch.device:
        """The device of this rank: its own GPU (`cuda:<local rank>`) when running on CUDA."""
        if self.active and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def share(self, n: int) -> slice:
        """This rank's contiguous share of `n` items (the first n % world_size ranks get one
        more), as `torch.tensor_split` would cut them."""
        size, extra = divmod(n, self.world_size)
        begin = self.rank * size + min(self.rank, extra)
        return slice(begin, begin + size + (self.rank < extra))

    def barrier(self) -> None:
        """Wait until every rank is here (nothing in one process)."""
        if self.active:
            torch.distributed.barrier()

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (a small picklable value: a flag, a path)."""
        if not self.active:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def all_sum(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Each tensor summed over the ranks, as a new tensor (the input is left alone).
        Float sums run in float64 so every rank ends with the same bits whatever the order."""
        if not self.active:
            return list(tensors)
        out = []
        for t in tensors:
            total = t.detach().to(torch.float64 if t.is_floating_point() else torch.int64)
            torch.distributed.all_reduce(total)
            out.append(total.to(t.dtype))
        return out

    def all_max(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise maximum over the ranks (a new tensor)."""
        if not self.active:
            return tensor
        out = tensor.clone()
        torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.MAX)
        return out

    def replicate(self, model: nn.Module) -> nn.Module:
        """`model` wrapped for data-parallel training (gradients averaged over the ranks in
        backward), or `model` itself in one process. Wrap again after every change of the
        architecture: DDP holds the parameters it was built with."""
        if not self.active:
            return model
        ids = [self.local_rank] if next(model.parameters()).is_cuda else None
        return ReplicatedModel(model, device_ids=ids)

    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Average the gradients of parameters DDP does not hold (a KD loss's adapters)."""
        if not self.active:
            return
        for p in params:
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad /= self.world_size

    def broadcast_state(self, model: nn.Module, buffers_only: bool = False) -> None:
        """Copy rank 0's parameters and buffers (or buffers only) into every rank's model."""
        if not self.active:
            return
        tensors = list(model.buffers()) if buffers_only else [*model.parameters(), *model.buffers()]
        with torch.no_grad():
            for t in tensors:
                torch.distributed.broadcast(t.data, src=0)

    def agree_on_model(self, model: nn.Module, where: str) -> list[str]:
        """Stop in one line unless every rank's model has the same architecture (widths, ranks,
        masks); then copy rank 0's weights to all. Returns each rank's architecture hash."""
        signature = architecture_hash(model)
        if not self.active:
            return [signature]
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, (signature, _shapes(model)))
        main = gathered[0][0]
        for rank, (other, shapes) in enumerate(gathered):
            if other != main:
                raise RanksDisagree(
                    f"ranks disagree on the model after {where}: "
                    f"{_difference(gathered[0][1], shapes, rank)}; every rank must apply the "
                    "same cut, so the run stops"
                )
        self.broadcast_state(model)
        log.info("%s: the %d ranks hold the same model (%s)", where, self.world_size, main)
        return [other for other, _ in gathered]

    def agree_on_config(self, config: dict[str, Any]) -> list[str]:
        """Stop in one line unless every rank composed the same config (`config`: this rank's,
        resolved, without Hydra's node); returns each rank's `config_sha256`."""
        signature = config_sha256(config)
        if not self.active:
            return [signature]
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, (signature, flatten(config)))
        for rank, (other, flat) in enumerate(gathered):
            if other != gathered[0][0]:
                difference = config_difference(gathered[0][1], flat, rank)
                raise RanksDisagree(
                    f"ranks disagree on the configuration: {difference}; every rank must run "
                    "the same configuration, so the run stops"
                )
        return [other for other, _ in gathered]

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (it fills a cache file), the others after it is done
        (they read the file)."""
        if self.is_main:
            yield
            self.barrier()
        else:
            self.barrier()
            yield


class ReplicatedModel(DistributedDataParallel):
    """DistributedDataParallel whose `get_submodule` finds the wrapped model's layers by their
    own paths (`layer3`, not `module.layer3`): KD losses hook student layers by path, whatever
    wraps the student."""

    def get_submodule(self, target: str) -> nn.Module:
        return self.module.get_submodule(target)


class MainRankImportance:
    """A Torch-Pruning importance criterion whose scores are rank 0's on every rank.

    Every rank scores the same weights on the same calibration batches, but GPU kernels need
    not add in the same order: scores a few ulps apart could rank two channels differently.
    Broadcasting rank 0's scores of each group makes every rank cut the same channels. Other
    attributes are the wrapped criterion's.
    """

    def __init__(self, importance: Any):
        self.importance = importance

    def __call__(self, group: Any, *args: Any, **kwargs: Any) -> torch.Tensor | None:
        scores = self.importance(group, *args, **kwargs)
        if scores is not None:  # None alike on every rank: it depends on the layers alone
            scores = scores.contiguous()
            torch.distributed.broadcast(scores, src=0)
        return scores

    def __getattr__(self, name: str) -> Any:
        if name == "importance":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.importance, name)


def architecture_hash(model: nn.Module) -> str:
    """A hash of what a cut decides: every weight's name and shape (widths, ranks, layers a
    decomposition added) and every pruning mask's values."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}\n".encode())
        if name.endswith("_mask"):
            digest.update(tensor.detach().to("cpu", torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _difference(main: dict[str, tuple], other: dict[str, tuple], rank: int) -> str:
    """The first weight whose shape differs between rank 0 and `rank`, in words."""
    for name in sorted(set(main) | set(other)):
        if main.get(name) != other.get(name):
            return (
                f"rank {rank}'s {name} has shape {list(other.get(name) or [])}, rank 0's "
                f"{list(main.get(name) or [])}"
            )
    return f"rank {rank}'s pruning masks differ from rank 0's"


def config_difference(main: dict[str, Any], other: dict[str, Any], rank: int) -> str:
    """The first key whose value differs between rank 0's flat config and `rank`'s, in words."""

    def value(flat: dict[str, Any], key: str) -> str:
        return repr(flat[key]) if key in flat else "absent"

    for key in sorted(set(main) | set(other)):
        if key not in main or key not in other or main[key] != other[key]:
            return f"rank {rank}'s {key} is {value(other, key)}, rank 0's {value(main, key)}"
    return f"rank {rank}'s config hashes differently from rank 0's"


def current() -> Ranks:
    """The ranks of this process: from torch.distributed once `launch` started it, else one."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    return Ranks(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        backend=str(dist.get_backend()),
    )


def processes(options: Any) -> int:
    """The `distributed` node's `nproc`, checked in one line: the processes (ranks) a run asks
    kdprune to start for it (1: this process runs it)."""
    nproc = options.get("nproc", 1)
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"distributed.nproc must be a whole number >= 1, got {nproc!r}")
    return nproc


def check_options(options: Any) -> tuple[str, float]:
    """The `distributed` config node's backend and timeout (seconds), checked in one line, and
    its `nproc`."""
    processes(options)
    backend = str(options.get("backend", "auto"))
    timeout = options.get("timeout_s", 300)
    if backend not in BACKENDS:
        choices = ", ".join(BACKENDS)
        raise ConfigError(f"distributed.backend must be one of {choices}, got {backend!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"distributed.timeout_s must be a positive number, got {timeout!r}")
    return backend, float(timeout)


def start(backend: str, device: torch.device, timeout_s: float) -> Ranks:
    """Start the process group from torchrun's environment (MASTER_ADDR, RANK, ...): NCCL when
    the run trains on CUDA, else gloo, unless `backend` names one. Every collective that waits
    longer than `timeout_s` (a rank died or hangs) raises instead of hanging."""
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(
        backend=backend, timeout=datetime.timedelta(seconds=timeout_s)
    )
    return current()


def collective_failure(err: BaseException) -> str | None:
    """A one-line reason when `err` is a failed collective (a rank died, a timeout), else None.
    Gloo raises plain RuntimeErrors, so the known messages are matched as well as DistError."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    markers = ("gloo", "nccl", "Connection closed", "Timed out", "Connection reset", "timeout")
    if isinstance(err, torch.distributed.DistError) or any(m in str(err) for m in markers):
        return text.split("] ", 1)[-1]  # gloo's messages start with a source location
    return None


def hydra_overrides(ranks: Ranks, run_dir: str) -> list[str]:
    """The overrides every rank adds: rank 0's run folder; for the others, no `.hydra/` folder
    and logging to the console only (they write no file)."""
    overrides = [f"hydra.run.dir={quoted(run_dir)}"]
    if not ranks.is_main:
        overrides += ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    return overrides


def quoted(value: str) -> str:
    """A value as a quoted Hydra override string (paths may hold characters Hydra parses)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def without_run_dir(argv: Sequence[str]) -> list[str]:
    """The command line without a `hydra.run.dir=` override (it is replaced by rank 0's)."""
    return [a for a in argv if a.lstrip("+~").split("=", 1)[0] != "hydra.run.dir"]


def check_run(cfg: Any, ranks: Ranks) -> None:
    """One line, before any work, for a bad `distributed` node and for what a run over several
    processes cannot do yet."""
    check_options(cfg.get("distributed") or {})
    if not ranks.active:
        return
    nproc = processes(cfg.get("distributed") or {})
    if nproc not in (1, ranks.world_size):
        raise ConfigError(
            f"distributed.nproc={nproc} asks kdprune to start {nproc} processes, but torchrun "
            f"already started this run as one of {ranks.world_size}: drop distributed.nproc (or "
            "set it to the world size), or run without torchrun"
        )
    if cfg.quantize.name != "none":
        raise ConfigError(
            f"quantize={cfg.quantize.name} runs in one process (INT8 calibration and export): "
            "run it without torchrun, or with quantize=none"
        )
    if int(cfg.trainer.batch_size) < ranks.world_size:
        raise ConfigError(
            f"trainer.batch_size {cfg.trainer.batch_size} is the global batch: it must give each "
            f"of the {ranks.world_size} ranks an image"
        )
    if str(cfg.device).startswith("mps"):
        raise ConfigError("torchrun with device=mps is not supported: use cpu or cuda")
