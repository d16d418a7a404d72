"""What each rank of an in-test process group does (`torch.multiprocessing.spawn`, gloo, a
FileStore in tmp_path: no port to pick, no timer to race). Each worker saves what it saw to
`<folder>/rank<r>.pt`; the test compares the ranks."""

from __future__ import annotations

import datetime
import multiprocessing
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist

from kdprune.data import Augment, digits, make_loaders
from kdprune.distillation import CrossEntropyObjective
from kdprune.distributed import MainRankImportance, collective_failure, current
from kdprune.engine import Stage, evaluate, fit, seed_everything
from kdprune.engine.lr_schedules import cosine
from kdprune.errors import KdpruneError
from kdprune.models import lenet5

CPU = torch.device("cpu")
WORLD = 2


def join(folder: Path, rank: int, timeout_s: float = 120) -> None:
    """Join the test's process group (one thread: the CPU is shared)."""
    torch.set_num_threads(1)
    store = dist.FileStore(str(folder / "store"), WORLD)
    dist.init_process_group(
        "gloo", store=store, rank=rank, world_size=WORLD,
        timeout=datetime.timedelta(seconds=timeout_s),
    )  # fmt: skip


def train_and_check(rank: int, folder: Path) -> None:
    """Train lenet5 on digits for two epochs on sharded data, evaluate with keep_predictions,
    check an identical model and a differently pruned one."""
    join(folder, rank)
    ranks = current()
    loaders = make_loaders(digits(), 64, 100, CPU, Augment(), seed=0, num_workers=0, ranks=ranks)
    seed_everything(0)
    model = lenet5(10, 1, 8)
    optimizer = partial(torch.optim.AdamW, lr=0.003)
    stage = Stage("t", 2, CrossEntropyObjective(), optimizer, cosine(), CPU, progress=False)
    history = fit(model, loaders.train, loaders.val, stage)
    test = evaluate(model, loaders.test, CPU, keep_predictions=True)
    same = ranks.agree_on_model(model, "training")
    different = lenet5(10, 1, 8, widths=(6, 16 if rank == 0 else 12))
    try:
        ranks.agree_on_model(different, "a cut")
        disagreement = None
    except KdpruneError as err:
        disagreement = str(err)
    torch.save(
        {"history": [{k: v for k, v in r.items() if k != "seconds"} for r in history],
         "state": model.state_dict(), "test": test, "same": same, "disagreement": disagreement},
        folder / f"rank{rank}.pt",
    )  # fmt: skip
    dist.destroy_process_group()


def importance_and_timeout(rank: int, folder: Path, rank1_may_go: multiprocessing.Event) -> None:
    """Rank 0's importance scores on every rank; then a collective rank 1 never joins: rank 0's
    times out, and only then (the event) does rank 1 go on."""
    join(folder, rank)
    own = MainRankImportance(lambda group: torch.full((4,), float(rank)))
    scores = own("a group")
    short = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=2))
    reason = None
    if rank == 0:
        try:
            dist.all_reduce(torch.ones(1), group=short)
        except RuntimeError as err:
            reason = collective_failure(err)
        rank1_may_go.set()
    else:
        rank1_may_go.wait()
    torch.save({"scores": scores, "reason": reason}, folder / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()
