"""The prunable dependency groups of a model: the unit sensitivity analysis prunes.

A group is what Torch-Pruning's DependencyGraph removes together: the output channels of one or
more layers (several when a residual sum couples them) and the input channels of the layers
that read them. Pruning one layer of a residual-coupled group alone removes nothing, so a
per-layer analysis would call it robust; a per-group one prunes what really goes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch_pruning as tp
from torch import Tensor, nn

from kdprune.pruning.base import move_inputs
from kdprune.pruning.calibration import autograd_enabled, eval_mode
from kdprune.pruning.graph import ROOT_TYPES, layer_widths
from kdprune.pruning.movement import IN_FNS, OUT_FNS


@dataclass(frozen=True)
class PrunableGroup:
    """One dependency group: its root layer (its name), the layers whose output channels go
    together (all pruned at one ratio), the layers that lose input channels, its width."""

    name: str
    out_layers: tuple[str, ...]
    in_layers: tuple[str, ...]
    channels: int

    @property
    def layers(self) -> str:
        """Every conv / linear layer the group touches: `layer1.0 (out), layer2.0 (in)`."""
        return ", ".join(
            [f"{p} (out)" for p in self.out_layers] + [f"{p} (in)" for p in self.in_layers]
        )


def prunable_groups(
    model: nn.Module, example_inputs: Tensor, ignored: Iterable[str]
) -> list[PrunableGroup]:
    """The groups Torch-Pruning would prune, rooted at conv / linear layers, minus those whose
    root is `ignored` (module paths: the classifier and prune_method.ignored_layers)."""
    with eval_mode(model), autograd_enabled():
        graph = tp.DependencyGraph().build_dependency(
            model, move_inputs(example_inputs, model), verbose=False
        )
    names = {module: path for path, module in model.named_modules()}
    skip = [m for path in ignored for m in model.get_submodule(path).modules()]
    widths = layer_widths(model)
    groups = []
    for group in graph.get_all_groups(ignored_layers=skip, root_module_types=ROOT_TYPES):
        outs = [names[dep.layer] for dep, _ in group if dep.pruning_fn in OUT_FNS]
        ins = [names[dep.layer] for dep, _ in group if dep.pruning_fn in IN_FNS]
        root = names[group[0].dep.target.module]
        outs = list(dict.fromkeys([root, *outs]))
        groups.append(PrunableGroup(root, tuple(outs), tuple(dict.fromkeys(ins)), widths[root]))
    return groups
