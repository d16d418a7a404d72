"""Movement scores (Sanh et al., 2020): what training does to each weight, summed over its steps.

A weight's score is S = −Σ_t (∂L/∂W)_t · W_t over the training steps it lived through. It is
positive when the weight moves away from zero (gradient descent grows |W|) and negative when
it shrinks towards zero; movement pruning keeps the highest scores, not the largest weights.

With a straight-through top-k mask, the score of Sanh et al. is a learned parameter whose
gradient is (∂L/∂W') · W (W' = W ⊙ mask); trained with plain SGD at learning rate 1 and no decay
it equals this sum exactly. Accumulating the sum after each backward gives the same scores
without a second optimizer, so the engine's optimizer, rebuilt after every pruning step, stays
the only one. A masked weight's gradient is zero, so its score stops moving: what was pruned
stays pruned ("hard" movement with masks that only grow, as every masked method here).

Channel (block) movement scores a channel by the sum of the scores of every parameter removed
with it (its filter, bias, BatchNorm scale and shift, and the next layers' input slices): the
learned score of a whole block under the same straight-through estimator.
"""

from __future__ import annotations

from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning.pruner import function

from kdprune.pruning.structured import replay_history

ORIG = "_orig"  # torch.nn.utils.prune renames a masked `weight` to `weight_orig`


def score_key(name: str) -> str:
    """A parameter's name without torch.nn.utils.prune's `_orig` suffix: scores outlive masks."""
    return name[: -len(ORIG)] if name.endswith(ORIG) else name


class MovementScores:
    """Per-parameter movement scores S = −Σ_t g_t · θ_t, accumulated after each backward.

    `regularize(model)` (the pruner's after-backward hook) adds −grad · param of every parameter
    that has a gradient. Called as a calibration (`scores(model, batches, loss_fn)`), it writes
    the scores into `.grad` of `model` — a copy Torch-Pruning is about to prune — for
    `MovementImportance` to read. `follow` prunes the scores as a pruning history pruned the
    model, so they keep matching its parameters after channels are removed.
    """

    def __init__(self) -> None:
        self.scores: dict[str, Tensor] = {}
        self.steps = 0
        # The fraction of the weights masked by these scores so far, as scheduled: repeated
        # masking counts from it, so rounding never accumulates over the pruning steps.
        self.masked_fraction = 0.0

    @property
    def empty(self) -> bool:
        """True until a training step has been scored."""
        return self.steps == 0

    @torch.no_grad()
    def regularize(self, model: nn.Module) -> None:
        """Add −∂L/∂θ · θ of every parameter of `model` to its score (after backward)."""
        for name, param in model.named_parameters():
            if param.grad is None:
                continue
            key, movement = score_key(name), -(param.grad.float() * param.float())
            total = self.scores.get(key)
            if total is None:
                self.scores[key] = movement
            elif total.shape != movement.shape:
                raise RuntimeError(
                    f"movement score of {key} has shape {tuple(total.shape)}, the parameter "
                    f"{tuple(movement.shape)}: the model was pruned without `follow`"
                )
            else:
                total.add_(movement)
        self.steps += 1

    def __call__(self, model: nn.Module, batches: Any = None, loss_fn: Any = None) -> None:
        """Put each parameter's score into its `.grad` (zeros where none was learned)."""
        for name, param in model.named_parameters():
            score = self.scores.get(score_key(name))
            if score is not None and score.shape == param.shape:
                param.grad = score.to(param).clone()
            else:
                param.grad = torch.zeros_like(param)

    @torch.no_grad()
    def follow(self, before: nn.Module, example_inputs: Tensor, history: list[list[Any]]) -> None:
        """Prune the scores as `history` pruned a model: `before` is a throwaway copy of that
        model as it was, whose parameters carry the scores through the same replay."""
        if not history or not self.scores:
            return
        for name, param in before.named_parameters():
            score = self.scores.get(score_key(name))
            param.copy_(score if score is not None else torch.zeros_like(param))
        replay_history(before, example_inputs, history)
        self.scores = {
            score_key(name): param.detach().clone()
            for name, param in before.named_parameters()
            if score_key(name) in self.scores
        }


def _grad(layer: nn.Module, name: str) -> Tensor | None:
    """The `.grad` (where the scores are put) of `layer`'s parameter `name`; None without one."""
    param = getattr(layer, name, None)
    return None if param is None else param.grad


def _weight_scores(layer: nn.Module) -> Tensor:
    """The scores of `layer`'s weight, which every layer this criterion reads has."""
    scores = _grad(layer, "weight")
    if scores is None:
        raise ValueError(f"{type(layer).__name__}.weight holds no movement scores")
    return scores


def _out_scores(layer: nn.Module) -> Tensor:
    """Per output channel: the summed scores of its filter and bias."""
    weight = _weight_scores(layer)
    if getattr(layer, "transposed", False):
        weight = weight.transpose(0, 1)
    total = weight.flatten(1).sum(1)
    bias = _grad(layer, "bias")
    if bias is not None:
        total = total + bias
    return total


def _in_scores(layer: nn.Module, pruning_fn: Any) -> Tensor:
    """Per input channel: the summed scores of the weights that read it."""
    weight = _weight_scores(layer)
    weight = weight if getattr(layer, "transposed", False) else weight.transpose(0, 1)
    total = weight.flatten(1).sum(1)
    groups = getattr(layer, "groups", 1)
    if pruning_fn == function.prune_conv_in_channels and groups not in (1, layer.in_channels):
        total = total.repeat(groups)  # grouped convolutions, as Torch-Pruning's criteria do
    return total


def _norm_scores(layer: nn.Module) -> Tensor | None:
    """Per channel of an affine norm layer: its scale's and shift's scores."""
    weight, bias = _grad(layer, "weight"), _grad(layer, "bias")
    if weight is None:
        return None
    return weight + bias if bias is not None else weight + 0.0


OUT_FNS = (function.prune_conv_out_channels, function.prune_linear_out_channels)
IN_FNS = (function.prune_conv_in_channels, function.prune_linear_in_channels)
NORM_FNS = (function.prune_batchnorm_out_channels, function.prune_layernorm_out_channels)


class MovementImportance(tp.importance.GroupMagnitudeImportance):
    """Torch-Pruning importance of a group's channels: the summed movement scores of every
    parameter removed with each channel, read from `.grad` (where `MovementScores` puts them).

    Scores are signed and summed raw (no normalisation): a channel training pushed away from
    zero scores high, one it shrank scores low and goes first.
    """

    def __init__(self) -> None:
        super().__init__(p=1, group_reduction="sum", normalizer=None)

    def _local(self, layer: nn.Module, pruning_fn: Any) -> Tensor | None:
        if not hasattr(layer, "weight") or getattr(layer.weight, "grad", None) is None:
            return None
        if pruning_fn in OUT_FNS:
            return _out_scores(layer)
        if pruning_fn in IN_FNS:
            return _in_scores(layer, pruning_fn)
        if pruning_fn in NORM_FNS:
            return _norm_scores(layer)
        return None

    @torch.no_grad()
    def __call__(self, group: Any) -> Tensor | None:  # a Torch-Pruning Group (untyped)
        scores, roots = [], []
        for i, (dep, idxs) in enumerate(group):
            local = self._local(dep.layer, dep.pruning_fn)
            if local is not None:
                scores.append(local[idxs])
                roots.append(group[i].root_idxs)
        return self._reduce(scores, roots) if scores else None
