"""Data-driven helpers for structured pruning: gradient calibration and BN-scale sparsity.

A calibration object fills `.grad` of the model it is given from a few batches, just before a
gradient-based importance criterion (Taylor, Hessian/OBD) reads them. It runs the model in eval
mode, so BatchNorm running statistics are not disturbed and each sample's loss depends on that
sample only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from itertools import islice

import torch
from torch import Tensor, nn

from kdprune.errors import ConfigError

LossFn = Callable[[Tensor, Tensor], Tensor]
Batches = Iterable[tuple[Tensor, Tensor]]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode for the block, then restore its train/eval flags."""
    flags = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags.items():
            module.training = training


@contextmanager
def autograd_enabled() -> Iterator[None]:
    """Record autograd even inside no_grad or inference_mode (tracing and gradients need it)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _on_device(batch: tuple[Tensor, Tensor], model: nn.Module) -> tuple[Tensor, Tensor]:
    device = next(model.parameters()).device
    inputs, targets = batch[0], batch[1]
    return inputs.to(device), targets.to(device)


class GradientCalibration:
    """Accumulate d(loss)/d(weight) over a few batches into `.grad` (first-order Taylor)."""

    def __init__(self, num_batches: int = 4) -> None:
        if num_batches < 1:
            raise ConfigError(f"calibration num_batches must be at least 1, got {num_batches}.")
        self.num_batches = num_batches

    def __call__(self, model: nn.Module, batches: Batches, loss_fn: LossFn) -> None:
        """Zero the gradients of `model`, then backpropagate `loss_fn` on up to num_batches."""
        model.zero_grad(set_to_none=True)
        seen = 0
        with eval_mode(model), autograd_enabled():
            for batch in islice(batches, self.num_batches):
                inputs, targets = _on_device(batch, model)
                loss_fn(model(inputs), targets).backward()
                seen += 1
        if seen == 0:
            raise ConfigError(
                "calibration batches are empty; Taylor importance needs at least one."
            )


class SquaredGradientCalibration:
    """Store the mean of per-sample squared gradients in `.grad` (empirical Fisher, OBD's Hessian).

    Torch-Pruning's `GroupHessianImportance` scores a channel by sum(w^2 * h) with h read from
    `.grad` when its own accumulator is empty; this object fills `.grad` with h. (Its own
    `accumulate_grad` keys its buffers by parameter but tests membership by name, so it keeps only
    the last sample; this class avoids it.)
    """

    def __init__(self, num_batches: int = 1, max_samples: int = 32) -> None:
        if num_batches < 1 or max_samples < 1:
            raise ConfigError(
                "calibration num_batches and max_samples must be at least 1, "
                f"got {num_batches} and {max_samples}."
            )
        self.num_batches = num_batches
        self.max_samples = max_samples

    def __call__(self, model: nn.Module, batches: Batches, loss_fn: LossFn) -> None:
        """Replace `.grad` of every trainable parameter by its mean squared per-sample gradient."""
        params = [p for p in model.parameters() if p.requires_grad]
        sums = [torch.zeros_like(p) for p in params]
        count = 0
        with eval_mode(model), autograd_enabled():
            for batch in islice(batches, self.num_batches):
                inputs, targets = _on_device(batch, model)
                take = min(len(inputs), self.max_samples - count)
                logits = model(inputs[:take])
                for i in range(take):
                    loss = loss_fn(logits[i : i + 1], targets[i : i + 1])
                    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
                    for total, grad in zip(sums, grads, strict=True):
                        if grad is not None:
                            total.add_(grad.detach().pow(2))
                count += take
                if count >= self.max_samples:
                    break
        if count == 0:
            raise ConfigError("calibration batches are empty; Hessian importance needs samples.")
        for param, total in zip(params, sums, strict=True):
            param.grad = total / count


class BNScaleSparsity:
    """L1 penalty on BatchNorm scales (network slimming): adds reg * sign(gamma) to their grads.

    Call `regularize(model)` after `loss.backward()` and before `optimizer.step()` (with AMP, after
    `scaler.unscale_(optimizer)`); it is equivalent to adding reg * sum(|gamma|) to the loss.
    """

    def __init__(self, reg: float = 1e-5) -> None:
        if reg < 0:
            raise ConfigError(f"BN-scale sparsity reg must be non-negative, got {reg}.")
        self.reg = reg

    @torch.no_grad()
    def regularize(self, model: nn.Module) -> None:
        """Add the L1 subgradient of every affine BatchNorm scale to its `.grad`."""
        if self.reg == 0:
            return
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                if module.weight.grad is not None:
                    module.weight.grad.add_(self.reg * torch.sign(module.weight))
