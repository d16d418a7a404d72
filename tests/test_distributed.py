"""One run over several processes: shards, the cross-rank model check, sums over ranks, failed
collectives. Sharding is checked with ranks that need no process group; what needs one runs in
two spawned gloo ranks (tests/helpers/ddp_workers.py)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers import ddp_workers
from torch.utils.data import Dataset

from kdprune.data import Augment, StreamLoader, TensorLoader, TensorSplit, digits, make_loaders
from kdprune.distillation import CrossEntropyObjective
from kdprune.distributed import (
    Ranks,
    architecture_hash,
    check_run,
    collective_failure,
    hydra_overrides,
    without_run_dir,
)
from kdprune.engine import Stage, evaluate, fit, seed_everything
from kdprune.engine.lr_schedules import cosine
from kdprune.errors import ConfigError
from kdprune.models import lenet5
from kdprune.pruning import UnstructuredPruner

CPU = torch.device("cpu")
TWO = [Ranks(0, 2), Ranks(1, 2)]


def _split(n: int) -> TensorSplit:
    return TensorSplit(torch.arange(n * 4, dtype=torch.float32).view(n, 1, 2, 2), torch.arange(n))


def test_shares_cut_each_global_batch_in_two_contiguous_halves() -> None:
    assert [Ranks(r, 3).share(10) for r in range(3)] == [slice(0, 4), slice(4, 7), slice(7, 10)]
    assert Ranks().share(5) == slice(0, 5)


@pytest.mark.parametrize("augment", [Augment(), Augment(1, True)], ids=["plain", "augmented"])
def test_in_memory_ranks_see_the_one_process_batches_between_them(augment: Augment) -> None:
    split = _split(15)  # batches of 7: 7, 7 and a last one of 1, too small to share in training
    one = list(TensorLoader(split, 7, CPU, True, augment, seed=3))
    shards = [list(TensorLoader(split, 7, CPU, True, augment, seed=3, ranks=r)) for r in TWO]
    assert len(one) == 3 and [len(s) for s in shards] == [2, 2]
    for b, (x, y, idx) in enumerate(one[:2]):
        assert torch.equal(torch.cat([s[b][0] for s in shards]), x)  # images and augmentation
        assert torch.equal(torch.cat([s[b][2] for s in shards]), idx)
        assert torch.equal(torch.cat([s[b][1] for s in shards]), y)


def test_evaluation_shards_cover_the_whole_split_once() -> None:
    split = _split(15)
    seen = [torch.cat([i for _, _, i in TensorLoader(split, 7, CPU, ranks=r)]) for r in TWO]
    assert sorted(torch.cat(seen).tolist()) == list(range(15))


class _Items(Dataset):
    def __init__(self, n: int) -> None:
        self.split = _split(n)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        return self.split.images[i], self.split.labels[i], i


def test_streamed_ranks_walk_the_same_global_batches() -> None:
    one = StreamLoader(_Items(15), 7, CPU, shuffle=True, seed=3, num_workers=0)
    shards = [StreamLoader(_Items(15), 7, CPU, True, seed=3, num_workers=0, ranks=r) for r in TWO]
    for loader in (one, *shards):
        loader.set_epoch(2)
    assert len(one) == 3 and [len(s) for s in shards] == [2, 2]
    batches = [list(s) for s in shards]
    for b, (_, _, idx) in enumerate(list(one)[:2]):
        assert torch.equal(torch.cat([s[b][2] for s in batches]), idx)
    evaluation = [StreamLoader(_Items(15), 7, CPU, num_workers=0, ranks=r) for r in TWO]
    seen = torch.cat([i for loader in evaluation for _, _, i in loader])
    assert sorted(seen.tolist()) == list(range(15))


def test_a_plain_run_stays_one_process() -> None:
    loaders = make_loaders(digits(), 64, 512, CPU, Augment(), seed=0)
    assert not loaders.train.ranks.active and loaders.train.ranks.record() == {
        "world_size": 1,
        "backend": None,
    }
    model = lenet5(10, 1, 8)
    assert Ranks().agree_on_model(model, "x") == [architecture_hash(model)]
    assert Ranks().replicate(model) is model


def test_the_architecture_hash_sees_widths_and_masks() -> None:
    torch.manual_seed(0)
    a, b = lenet5(10, 1, 8), lenet5(10, 1, 8)
    assert architecture_hash(a) == architecture_hash(b)  # weights do not count
    assert architecture_hash(lenet5(10, 1, 8, widths=(6, 12))) != architecture_hash(a)
    l1 = partial(torch.nn.utils.prune.L1Unstructured)
    for model, ratio in ((a, 0.5), (b, 0.6)):
        UnstructuredPruner(model, torch.zeros(1, 1, 8, 8), method=l1, ratio=ratio).apply()
    assert architecture_hash(a) != architecture_hash(b)


def test_what_torchrun_cannot_do_yet_is_refused_in_one_line(make_cfg) -> None:
    with pytest.raises(ConfigError, match="quantize=ptq runs in one process"):
        check_run(make_cfg("quantize=ptq"), Ranks(0, 2))
    with pytest.raises(ConfigError, match="must give each of the 4 ranks"):
        check_run(make_cfg("trainer.batch_size=3"), Ranks(0, 4))
    check_run(make_cfg("quantize=ptq", "trainer.batch_size=3"), Ranks())  # one process: fine
    with pytest.raises(ConfigError, match="distributed.timeout_s must be a positive number"):
        check_run(make_cfg("distributed.timeout_s=0"), Ranks())
    with pytest.raises(ConfigError, match="distributed.backend must be one of auto, gloo, nccl"):
        check_run(make_cfg("distributed.backend=mpi"), Ranks())


def test_failed_collectives_are_told_from_bugs() -> None:
    gloo = RuntimeError("[../gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 10ms")
    assert collective_failure(gloo) == "Timed out waiting 10ms"
    assert collective_failure(RuntimeError("Connection closed by peer [127.0.0.1]:1")) is not None
    assert collective_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None


def test_other_ranks_write_no_hydra_files_into_rank_0s_folder() -> None:
    argv = ["model=lenet5", "hydra.run.dir=outputs/${now:%H}", "seed=1"]
    assert without_run_dir(argv) == ["model=lenet5", "seed=1"]
    assert hydra_overrides(Ranks(0, 2), "out/it's") == ["hydra.run.dir='out/it\\'s'"]
    assert hydra_overrides(Ranks(1, 2), "out")[1:] == [
        "hydra.output_subdir=null",
        "hydra/job_logging=stdout",
    ]


def _spawn(worker, tmp_path: Path, *args) -> list[dict]:
    mp.spawn(worker, args=(tmp_path, *args), nprocs=ddp_workers.WORLD, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_two_ranks_train_and_evaluate_as_one(tmp_path: Path) -> None:
    rank0, rank1 = _spawn(ddp_workers.train_and_check, tmp_path)
    # Every rank records the same numbers and ends with the same weights.
    assert rank0["history"] == rank1["history"] and len(rank0["history"]) == 2
    assert all(torch.equal(rank0["state"][k], rank1["state"][k]) for k in rank0["state"])
    assert rank0["test"]["acc"] == rank1["test"]["acc"]
    assert rank0["test"]["loss"] == rank1["test"]["loss"]
    assert torch.equal(rank0["test"]["predictions"], rank1["test"]["predictions"])
    assert (rank0["test"]["predictions"] >= 0).all()  # the whole test split, from both shares
    assert rank0["same"] == rank1["same"] and len(set(rank0["same"])) == 1
    # A cut that differs between ranks stops both, with the same one line.
    line = rank0["disagreement"]
    assert line == rank1["disagreement"] and "rank 1's" in line and "\n" not in line
    # The global batch and schedule are the one-process run's: the numbers are close to it.
    torch.set_num_threads(1)
    loaders = make_loaders(digits(), 64, 100, CPU, Augment(), seed=0, num_workers=0)
    seed_everything(0)
    model = lenet5(10, 1, 8)
    opt = partial(torch.optim.AdamW, lr=0.003)
    stage = Stage("t", 2, CrossEntropyObjective(), opt, cosine(), CPU, progress=False)
    single = fit(model, loaders.train, loaders.val, stage)
    test = evaluate(model, loaders.test, CPU)
    assert [r["train_loss"] for r in rank0["history"]] == pytest.approx(
        [r["train_loss"] for r in single], rel=1e-4
    )
    assert rank0["test"]["acc"] == pytest.approx(test["acc"], abs=0.01)


def test_importance_is_rank_0s_and_a_missing_rank_times_out(tmp_path: Path) -> None:
    event = mp.get_context("spawn").Event()
    rank0, rank1 = _spawn(ddp_workers.importance_and_timeout, tmp_path, event)
    assert torch.equal(rank0["scores"], torch.zeros(4))
    assert torch.equal(rank1["scores"], torch.zeros(4))  # rank 1's own criterion said 1.0
    assert "Timed out" in rank0["reason"]


def _failure(local_rank: int, exitcode: int, timestamp: int = 100):
    from types import SimpleNamespace

    return SimpleNamespace(local_rank=local_rank, exitcode=exitcode, timestamp=timestamp)


def _rank_logs(root, lines_by_rank: dict[int, list[str]]):
    for rank, lines in lines_by_rank.items():
        folder = root / "run_0" / "attempt_0" / str(rank)
        folder.mkdir(parents=True)
        (folder / "stderr.log").write_text("\n".join(lines) + "\n")
    return root


def test_the_job_names_the_rank_that_died_not_the_ones_that_followed(tmp_path) -> None:
    from types import SimpleNamespace

    from kdprune.launch import root_failure

    collective = "kdprune: error: rank 0 of 2: a collective failed (Connection reset by peer)"
    logs = _rank_logs(tmp_path, {0: [collective], 1: ["kdprune: error: an injected fault"]})
    # torchrun's timestamps are whole seconds: the dead rank and its consequence tie
    err = SimpleNamespace(failures={0: _failure(0, 1), 1: _failure(1, 3)})
    assert root_failure(err, logs)[0] == 1
    stopped = SimpleNamespace(failures={0: _failure(0, -15), 1: _failure(1, 3)})  # by the agent
    assert root_failure(stopped, logs)[0] == 1
    # a rank that died alone, by a signal, is still named when nothing else is the cause
    killed = SimpleNamespace(failures={0: _failure(0, 1), 1: _failure(1, -9, timestamp=99)})
    assert root_failure(killed, logs)[0] == 1
