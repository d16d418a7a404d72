"""Sensitivity analysis (Distiller's): prune one dependency group of a copy at each ratio of a
grid, the rest left whole, and score the copy on validation data.

The copies are cut by the configured structured `prune_method` (its criterion picks the
channels; `layer_ratios` sets the ratio of the group's layers, 0 elsewhere), so the analysis
measures the cut a run with that method would make.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from kdprune.metrics import count_macs_params
from kdprune.pruning.masks import clone_model
from kdprune.pruning.structured import layer_widths
from kdprune.run_record import VAL_ACC
from kdprune.sensitivity.groups import PrunableGroup

# sensitivity.csv: the first five are the analysis, the rest what each cut kept.
COLUMNS = [
    "group", "layers", "ratio", VAL_ACC, "val_loss", "channels_kept", "channels", "macs",
    "params",
]  # fmt: skip
Evaluate = Callable[[nn.Module], dict[str, float]]


@dataclass
class Cutter:
    """Prunes copies of `model` with a structured pruner factory (a `prune_method.pruner` node
    built with ratio 0, unit channels) and counts what they keep."""

    model: nn.Module
    example_inputs: Tensor
    factory: Callable[..., Any]
    calibration: Sequence[tuple[Tensor, Tensor]]

    def cut(self, layer_ratios: dict[str, float] | None = None) -> nn.Module:
        """A pruned copy: `layer_ratios` (module path -> channel ratio), or the factory's own
        configured cut when None. The model itself is never touched."""
        copy = clone_model(self.model)
        extra = {} if layer_ratios is None else {"layer_ratios": layer_ratios}
        pruner = self.factory(
            model=copy,
            example_inputs=self.example_inputs,
            calibration=self.calibration,
            loss_fn=F.cross_entropy,
            **extra,
        )
        if layer_ratios is None or any(r > 0 for r in layer_ratios.values()):
            pruner.apply()
        return copy

    def count(self, model: nn.Module) -> tuple[int, int]:
        """(MACs per sample, parameters) of a model."""
        return count_macs_params(model, self.example_inputs)


def _row(
    group: PrunableGroup,
    ratio: float,
    scores: dict[str, float],
    model: nn.Module,
    counts: tuple[int, int],
) -> dict[str, Any]:
    return {
        "group": group.name,
        "layers": group.layers,
        "ratio": ratio,
        VAL_ACC: scores["acc"],
        "val_loss": scores["loss"],
        "channels_kept": layer_widths(model)[group.name],
        "channels": group.channels,
        "macs": counts[0],
        "params": counts[1],
    }


def scan(
    cutter: Cutter,
    groups: Sequence[PrunableGroup],
    ratios: Sequence[float],
    evaluate: Evaluate,
    progress: bool | None = None,
) -> pd.DataFrame:
    """sensitivity.csv's rows: each group at ratio 0 (the model as it is) and at each ratio of
    the grid, pruned alone; `progress` as `trainer.progress` (None: a bar on a terminal only)."""
    base, base_counts = evaluate(cutter.model), cutter.count(cutter.model)
    rows = []
    with tqdm(
        total=len(groups) * len(ratios),
        desc="sensitivity",
        leave=False,
        disable=None if progress is None else not progress,
        dynamic_ncols=True,
    ) as bar:
        for group in groups:
            rows.append(_row(group, 0.0, base, cutter.model, base_counts))
            for ratio in ratios:
                pruned = cutter.cut(dict.fromkeys(group.out_layers, float(ratio)))
                scores, counts = evaluate(pruned), cutter.count(pruned)
                rows.append(_row(group, float(ratio), scores, pruned, counts))
                bar.update()
    return pd.DataFrame(rows, columns=COLUMNS)
