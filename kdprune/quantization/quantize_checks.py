"""Checks of the `quantize` group that run before any data is loaded or anything is trained."""

from __future__ import annotations

import copy
from typing import Any

from omegaconf import DictConfig, open_dict

from kdprune.errors import ConfigError


def _schedule_epochs(cfg: DictConfig) -> dict[str, Any]:
    from kdprune.instantiation import config_dict

    schedule = config_dict(cfg.schedule)
    return {k: v for k, v in schedule.items() if str(k).endswith("_epochs")}


def check_quantize_budget(cfg: DictConfig) -> None:
    """`quantize.epochs` is a whole number that the order takes out of its last training stage
    (the schedule's epochs with and without it differ), leaving that stage no fewer than 0."""
    from kdprune.instantiation import instantiate

    epochs = cfg.quantize.get("epochs", 0)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"quantize.epochs must be a whole number >= 0, got {epochs!r}")
    trains = getattr(instantiate(cfg.quantize.stage), "epochs", 0)  # its options checked too
    if trains != epochs:
        raise ConfigError(
            f"quantize={cfg.quantize.name} trains for {trains} epochs, but quantize.epochs="
            f"{epochs} would take {epochs} from the order's last stage; leave it at {trains}"
        )
    if epochs == 0:
        return
    without = copy.deepcopy(cfg)
    with open_dict(without):
        without.quantize.epochs = 0
    full, left = _schedule_epochs(without), _schedule_epochs(cfg)
    shortened = {k: (full[k], left[k]) for k in full if full[k] != left.get(k)}
    if not shortened:
        raise ConfigError(
            f"schedule {cfg.schedule.name} does not take quantize.epochs out of any of its stages, "
            "so QAT would train the student longer than the other orders; subtract it as "
            "conf/schedule/*.yaml do (${minus:...,${quantize.epochs}})"
        )
    for key, (before, after) in shortened.items():
        if after < 0:
            raise ConfigError(
                f"quantize.epochs={epochs} is more than the order's last stage has "
                f"(schedule.{key}: {before}); QAT epochs come out of it so the student's total "
                "stays the budget: lower quantize.epochs or give that stage more epochs"
            )


def check_quantize_model(cfg: DictConfig) -> None:
    """The stage's options, and the stage's own check on a fresh student (INT8 on this CPU, the
    quantizer handling every layer); feature KD cannot hook an exported QAT graph."""
    from kdprune.instantiation import instantiate
    from kdprune.models import build
    from kdprune.models.common import example_inputs

    stage = instantiate(cfg.quantize.stage)
    if not hasattr(stage, "check"):  # quantize=none
        return
    if cfg.quantize.get("epochs", 0) > 0 and cfg.kd.get("student_layers"):
        raise ConfigError(
            f"kd={cfg.kd.name} hooks student layers, which the exported graph that quantize="
            f"{cfg.quantize.name} trains does not have; use kd=hinton or kd=none"
        )
    stage.check(build(cfg.model), example_inputs(cfg.dataset, batch=2))
