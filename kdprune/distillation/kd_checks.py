"""Checks of a `kd` config node that run before any objective is built or model trained.

This module imports no torch (its layer check takes the models that callers built), so the
command line refuses a bad KD value without loading it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kdprune.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn


def validate_kd_params(
    temperature: float | None = None,
    alpha: float | None = None,
    label_smoothing: float | None = None,
) -> None:
    """Raise `ConfigError` if a given KD hyperparameter is out of range (None means not checked)."""
    for name, value in (("kd.temperature", temperature), ("kd.alpha", alpha)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"{name} must be a number, got {value!r}.")
    if temperature is not None and not float(temperature) > 0:
        raise ConfigError(f"kd.temperature must be > 0, got {temperature}.")
    if alpha is not None and not 0.0 <= float(alpha) <= 1.0:
        raise ConfigError(f"kd.alpha must be in [0, 1], got {alpha}.")
    if label_smoothing is not None and not 0.0 <= float(label_smoothing) < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")


def layer_paths(paths: Sequence[str] | None, key: str) -> list[str]:
    """Return a config's module paths as strings; `ConfigError` unless a non-empty list."""
    if paths is None or isinstance(paths, str) or len(paths) == 0:
        raise ConfigError(f"{key} must be a non-empty list of module paths, got {paths!r}.")
    return [str(p) for p in paths]


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
                from kdprune.distillation.features import check_layers

                check_layers(model, paths, f"kd.{key}")
