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

from kdprune.distillation.checks import validate_kd
from kdprune.distillation.feature_objectives import AttentionObjective, FitNetObjective
from kdprune.distillation.features import (
    capture_features,
    check_layers,
    probe_feature_shapes,
)
from kdprune.distillation.logit_objectives import (
    CrossEntropyObjective,
    HintonObjective,
    Objective,
)
from kdprune.distillation.losses import (
    AttentionTransferLoss,
    FitNetLoss,
    KDLoss,
    validate_kd_params,
)
from kdprune.distillation.teacher import check_distinct, compute_teacher_logits, freeze_teacher

__all__ = [
    "AttentionObjective",
    "AttentionTransferLoss",
    "CrossEntropyObjective",
    "FitNetLoss",
    "FitNetObjective",
    "HintonObjective",
    "KDLoss",
    "Objective",
    "capture_features",
    "check_distinct",
    "check_layers",
    "compute_teacher_logits",
    "freeze_teacher",
    "probe_feature_shapes",
    "validate_kd",
    "validate_kd_params",
]
