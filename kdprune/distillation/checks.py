"""Checks of a `kd` config node that run before any objective is built or model trained."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from kdprune.distillation.features import check_layers, layer_paths
from kdprune.distillation.losses import validate_kd_params
from kdprune.errors import ConfigError


def validate_kd(
    cfg_kd: Mapping[str, Any],
    student: nn.Module | None = None,
    teacher: nn.Module | None = None,
) -> None:
    """Check a `kd` config node's hyperparameters and, given the models, its layer paths."""
    validate_kd_params(cfg_kd.get("temperature"), cfg_kd.get("alpha"))
    beta, p = cfg_kd.get("beta"), cfg_kd.get("p")
    if beta is not None and not float(beta) >= 0:
        raise ConfigError(f"kd.beta must be >= 0, got {beta}.")
    if p is not None and not float(p) > 0:
        raise ConfigError(f"kd.p must be > 0, got {p}.")
    for key, model in (("student_layers", student), ("teacher_layers", teacher)):
        paths = cfg_kd.get(key)
        if paths is not None:
            paths = layer_paths(paths, f"kd.{key}")
            if model is not None:
                check_layers(model, paths, f"kd.{key}")
