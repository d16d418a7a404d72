"""The training engine: it learns, it is deterministic, it stops on a non-finite loss."""

from __future__ import annotations

import resource
import sys
from functools import partial

import pytest
import torch
from torch import nn

from kdprune.data import Augment, digits, make_loaders
from kdprune.distillation import CrossEntropyObjective
from kdprune.engine import Stage, evaluate, fit, keep_freed_memory, seed_everything
from kdprune.engine.lr_schedules import cosine, step
from kdprune.errors import NonFiniteLossError
from kdprune.models import lenet5

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def loaders():
    return make_loaders(digits(), 64, 512, CPU, Augment(), seed=0)


def _train(loaders, epochs: int = 6, lr: float = 0.003, seed: int = 0, objective=None):
    seed_everything(seed)
    model = lenet5(10, 1, 8)
    stage = Stage(
        "t",
        epochs,
        objective or CrossEntropyObjective(),
        partial(torch.optim.AdamW, lr=lr),
        cosine(),
        CPU,
        progress=False,
    )
    history = fit(model, loaders.train, loaders.val, stage)
    return model, history


def test_engine_learns_digits_to_high_accuracy(loaders) -> None:
    model, history = _train(loaders, epochs=12)
    assert len(history) == 12
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert evaluate(model, loaders.test, CPU)["acc"] > 0.9


def test_same_seed_same_numbers(loaders) -> None:
    a, ha = _train(loaders, epochs=2, seed=5)
    b, hb = _train(loaders, epochs=2, seed=5)
    c, _ = _train(loaders, epochs=2, seed=6)
    assert [r["val_loss"] for r in ha] == [r["val_loss"] for r in hb]
    assert all(
        torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not all(
        torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), c.state_dict().values(), strict=True)
    )


def test_non_finite_loss_stops_with_clear_error(loaders) -> None:
    def nan_objective(model: nn.Module, x, y, idx):
        logits = model(x)
        return logits.sum() * float("nan"), logits

    with pytest.raises(NonFiniteLossError, match="NaN or infinite"):
        _train(loaders, epochs=1, objective=nan_objective)


def _narrow_first_conv(model: nn.Module, step: int) -> bool:
    """A step hook that drops the first conv's last channel once (at step 2), as a pruning step
    does: the new weights come back in the contiguous format."""
    if step != 2:
        return False
    conv, nxt = model.layer1[0], model.layer2[0]
    conv.weight = nn.Parameter(conv.weight.detach()[:-1].contiguous())
    conv.bias = nn.Parameter(conv.bias.detach()[:-1].clone())
    conv.out_channels -= 1
    nxt.weight = nn.Parameter(nxt.weight.detach()[:, :-1].contiguous())
    nxt.in_channels -= 1
    return True


def _sgd_stage(fmt: torch.memory_format, batches: int, **kwargs) -> Stage:
    """A one-epoch SGD stage of `batches` steps that keeps the model in `fmt`."""
    return Stage(
        "t",
        1,
        CrossEntropyObjective(),
        partial(torch.optim.SGD, lr=0.01),
        cosine(),
        CPU,
        memory_format=fmt,
        progress=False,
        max_batches=batches,
        **kwargs,
    )


@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format])
def test_a_stage_keeps_its_memory_format_across_a_pruning_step(loaders, fmt) -> None:
    seed_everything(0)
    model = lenet5(10, 1, 8)
    fit(model, loaders.train, loaders.val, _sgd_stage(fmt, 4, step_hooks=[_narrow_first_conv]))
    convs = [model.layer1[0].weight, model.layer2[0].weight]
    assert model.layer1[0].out_channels == 5
    assert all(w.is_contiguous(memory_format=fmt) for w in convs)
    # (the first conv has one input channel: both formats lay its weight out alike)
    assert (not convs[1].is_contiguous()) == (fmt is torch.channels_last)


def test_channels_last_on_the_cpu_only_when_asked_always() -> None:
    from kdprune.schedules.context import memory_format

    cuda = torch.device("cuda")
    assert memory_format(True, CPU) is torch.contiguous_format  # the default: CUDA only
    assert memory_format(True, cuda) is torch.channels_last
    assert memory_format("always", CPU) is torch.channels_last
    assert memory_format(False, cuda) is torch.contiguous_format


def test_channels_last_trains_the_same_model_up_to_rounding(loaders) -> None:
    def train(fmt):
        seed_everything(3)
        model = lenet5(10, 1, 8).to(memory_format=fmt)
        fit(model, loaders.train, loaders.val, _sgd_stage(fmt, 3))
        return model.state_dict()

    nchw, cl = train(torch.contiguous_format), train(torch.channels_last)
    for key, value in nchw.items():
        torch.testing.assert_close(cl[key], value, rtol=1e-4, atol=1e-5)


def test_val_selection_restores_best_epoch(loaders) -> None:
    model, history = _train(loaders, epochs=3)
    best = max(r["val_acc"] for r in history)
    assert evaluate(model, loaders.val, CPU)["acc"] == pytest.approx(best)


def test_lr_schedules_are_pure_functions() -> None:
    f = cosine(warmup=0.1)
    assert f(0.0) == 0.0 and f(0.1) == pytest.approx(1.0) and f(1.0) == pytest.approx(0.0)
    g = step(milestones=[0.5], gamma=0.1)
    assert g(0.4) == 1.0 and g(0.6) == pytest.approx(0.1)


def test_step_hook_that_changes_parameters_rebuilds_optimizer(loaders) -> None:
    """A hook that swaps a layer's weight for a new Parameter: it must keep training."""
    seed_everything(0)
    model = lenet5(10, 1, 8)
    swapped = {}

    def hook(m: nn.Module, step_: int) -> bool:
        if step_ == 3:
            m.fc2.weight = nn.Parameter(m.fc2.weight.detach().clone())
            swapped["w"] = m.fc2.weight.detach().clone()
            return True
        return False

    stage = Stage(
        "t",
        1,
        CrossEntropyObjective(),
        partial(torch.optim.SGD, lr=0.1),
        cosine(),
        CPU,
        progress=False,
        step_hooks=[hook],
    )
    fit(model, loaders.train, loaders.val, stage)
    assert not torch.equal(model.fc2.weight, swapped["w"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_page_faults_on_repeated_big_allocations() -> None:
    def faults() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            # 64 MiB: above glibc's largest mmap threshold, so by default each one is a fresh
            # mapping whose 16,384 pages fault in again (measured: 327,700 faults for 20)
            torch.empty(64 << 20, dtype=torch.uint8).fill_(1)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    assert keep_freed_memory(None) is False
    assert keep_freed_memory(128) is True
    faults()  # the heap grows once
    assert faults() < 1000
