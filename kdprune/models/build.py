"""Building a model from its config: every `conf/model/*.yaml` names itself (`name:`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig
from torch import nn

from kdprune.instantiation import config_dict, instantiate

NAME_KEY = "name"  # a label for files and reports, not an argument of the builder


def model_name(model_cfg: Mapping[str, Any]) -> str:
    """A model config's `name`; for a file saved before configs named themselves, the builder's."""
    name = model_cfg.get(NAME_KEY)
    return str(name) if name else str(model_cfg["_target_"]).rsplit(".", 1)[-1]


def build(model_cfg: Mapping[str, Any]) -> nn.Module:
    """Instantiate a model config (its `name` stays out of the builder's arguments)."""
    if isinstance(model_cfg, DictConfig):
        model_cfg = config_dict(model_cfg)
    return instantiate({k: v for k, v in model_cfg.items() if k != NAME_KEY})
