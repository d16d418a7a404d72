"""Pruning: the `prune_method` config group's pruners, mask helpers and model files.

Every `conf/prune_method/*.yaml` has `ratio` in [0, 1), `unit` (channels | params | macs) and a
`pruner` node (`_target_` + `_partial_: true`). The run completes that node with the model:

    validate(cfg.prune_method)                          # at start-up: ranges, unit, classes
    make = kdprune.instantiation.instantiate(cfg.prune_method.pruner)
    pruner = make(model=model, example_inputs=x,        # before training: ConfigError if the
                  calibration=batches, loss_fn=loss)    # model has nothing to prune / target
    ...  loss.backward(); pruner.regularize(model); optimizer.step()   # sparse training, if any
    result = pruner.apply()                             # in place -> PruneResult
    save_model(path, model, model_cfg, result.history)  # rebuilt from config + history, no pickle

That is the `Pruner` contract (kdprune.pruning.base), which every pruner class derives from: a
constructor taking the model, `example_inputs` and optional `calibration` batches of (inputs,
targets) and `loss_fn`; class attributes `kind` and `learns_while_training`; a static
`check_options(**options)` and `check_target()`; `plan()` and `apply() -> PruneResult` for one
cut; `begin_gradual()` and `step_toward(before, after, target, rebuild)` for a cut made part of
the way at a time (the joint order); `regularize(model)`, `training_hook()` and `carried()` for
what it learns while the student trains. Callers use these and never probe a pruner for more.
Pluggable parts are objects built from YAML: a Torch-Pruning importance criterion, a calibration
callable (Taylor, Hessian), a regularizer (BN-scale sparsity, movement scores), a
BasePruningMethod. A pruner that searches a params / MACs target turns one knob through
`kdprune.pruning.search.TargetSearch`, comparing models by a Measure of
`kdprune.models.counting`. A later method joins as another `Pruner` subclass; one that changes
the architecture must also describe its change in a replayable form for the model file, as
`history` does for channel pruning and the {path, kind, ranks} steps of `LowRankPruner`
(`prune_method=tucker2|cp`) do for decompositions.

Structured pruning replaces parameters (new nn.Parameter objects): build the optimizer after
`apply()`. Mask-based pruning keeps masks attached for fine-tuning; `make_permanent` folds them.
"""

from kdprune.pruning.base import (
    ALLOCATIONS,
    MEASURED_UNITS,
    UNITS,
    MaskedPruner,
    Pruner,
    PruneResult,
    pruner_class,
    validate,
)
from kdprune.pruning.calibration import (
    BNScaleSparsity,
    GradientCalibration,
    SquaredGradientCalibration,
)
from kdprune.pruning.io import load_model, read_model_file, save_model
from kdprune.pruning.layer_ratios import read_layer_ratios, write_layer_ratios
from kdprune.pruning.lowrank import LowRankPruner
from kdprune.pruning.masks import clone_model, has_masks, make_permanent, plain_state_dict
from kdprune.pruning.movement import MovementImportance, MovementScores
from kdprune.pruning.movement_pruners import ChannelMovementPruner, MovementPruner
from kdprune.pruning.structured import StructuredPruner, replay_history
from kdprune.pruning.unstructured import EveryOtherPruningMethod, UnstructuredPruner

__all__ = [
    "ALLOCATIONS",
    "MEASURED_UNITS",
    "UNITS",
    "BNScaleSparsity",
    "ChannelMovementPruner",
    "Pruner",
    "EveryOtherPruningMethod",
    "GradientCalibration",
    "MovementImportance",
    "MovementPruner",
    "MovementScores",
    "LowRankPruner",
    "MaskedPruner",
    "PruneResult",
    "SquaredGradientCalibration",
    "StructuredPruner",
    "UnstructuredPruner",
    "clone_model",
    "has_masks",
    "load_model",
    "make_permanent",
    "plain_state_dict",
    "pruner_class",
    "read_layer_ratios",
    "read_model_file",
    "replay_history",
    "save_model",
    "validate",
    "write_layer_ratios",
]
