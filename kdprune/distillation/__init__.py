"""Knowledge distillation: losses, feature hooks, the frozen teacher and training objectives.

The engine trains with an *objective*: `objective(model, x, y, idx) -> (loss, logits)`, where
`idx` holds the dataset indices of the batch (to look up cached teacher logits), `loss` is a
scalar and `logits` are the student's. `objective.extra_parameters()` lists parameters the
optimizer must also train (the FitNet adapters; empty otherwise).

Each `conf/kd/*.yaml` has an `objective` node (`_partial_: true`). Code completes it with one
keyword signature, the same for every objective:

    objective = instantiate(cfg.kd.objective)(
        student=student,              # nn.Module: layer paths are checked against it
        teacher=teacher,              # nn.Module or None; frozen in place (eval, no grad)
        teacher_logits=cached,        # Tensor (N, classes) from compute_teacher_logits, or None
        label_smoothing=0.1,          # float in [0, 1)
        example_input=batch_x,        # a Tensor input batch (FitNet sizes its adapters from it)
    )

`CrossEntropyObjective` (kd: none) ignores the teacher arguments; `HintonObjective` uses
`teacher_logits` when given, else runs `teacher`; the feature objectives always run `teacher`.
Build the objective after the models are on their device and after pruning: FitNet adapters
are created on the student's device for its current channel counts. The class attribute
`needs_teacher` (reachable as `partial.func.needs_teacher`) says whether a teacher is used.
Bad hyperparameters or layer paths raise `ConfigError` in the constructor, before training.
"""

import importlib
from typing import Any

# Each public name and the module that defines it, imported on first use: the command line's
# checks (kd_checks.py) need no torch, and importing this package must not load it for them.
_HOMES = {
    "AttentionObjective": "feature_objectives",
    "AttentionTransferLoss": "losses",
    "CrossEntropyObjective": "logit_objectives",
    "FitNetLoss": "losses",
    "FitNetObjective": "feature_objectives",
    "HintonObjective": "logit_objectives",
    "KDLoss": "losses",
    "Objective": "logit_objectives",
    "capture_features": "features",
    "check_distinct": "frozen_teacher",
    "check_layers": "features",
    "compute_teacher_logits": "frozen_teacher",
    "freeze_teacher": "frozen_teacher",
    "probe_feature_shapes": "features",
    "validate_kd": "kd_checks",
    "validate_kd_params": "kd_checks",
}


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use (PEP 562)."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


__all__ = sorted(_HOMES)
