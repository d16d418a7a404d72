"""`instantiate` with an execution whitelist: configs build objects from trusted packages only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from hydra import compose, initialize_config_dir
from hydra.utils import execution_whitelist
from hydra.utils import instantiate as _instantiate
from omegaconf import DictConfig, OmegaConf

from kdprune.paths import CONF_DIR
from kdprune.sweeping import sweeper_config as _sweeper_config  # noqa: F401  (registers hydra/sweeper)

# Packages whose callables a config's `_target_` may name. A user's own plug-in (a custom
# BasePruningMethod, say) is allowed by adding its package to the `trusted_targets` config key.
TRUSTED_TARGETS = ("kdprune.*", "torch.*", "torchvision.*", "torch_pruning.*")


def trusted(extra: Sequence[str] = ()) -> Any:
    """A context in which `hydra.utils.instantiate` accepts the trusted targets (and `extra`)."""
    return execution_whitelist([*TRUSTED_TARGETS, *extra])


def instantiate(config: Any, *args: Any, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate` restricted to the trusted targets (plus any active context's)."""
    with trusted():
        return _instantiate(config, *args, **kwargs)


def config_dict(node: Any, resolve: bool = True) -> dict[str, Any]:
    """A config mapping node as plain data (`OmegaConf.to_container`), typed as the dict it gives
    (OmegaConf's annotation covers list and string nodes too)."""
    return cast(dict[str, Any], OmegaConf.to_container(node, resolve=resolve))


def input_line(override: Any) -> str:
    """A parsed command-line override's text (Hydra types it optional: only the overrides it
    builds itself have none)."""
    if override.input_line is None:
        raise ValueError(f"override {override} has no command-line text")
    return str(override.input_line)


def compose_run(overrides: Sequence[str], with_hydra: bool = False) -> DictConfig:
    """conf/ composed with `overrides` as `kdprune` composes a run (plus Hydra's own node)."""
    with initialize_config_dir(config_dir=str(CONF_DIR)):
        return compose("config", overrides=list(overrides), return_hydra_config=with_hydra)


def override_keys(overrides: Sequence[str]) -> list[str]:
    """The key (or config group) each command-line override sets, in order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))]


def _minus(a: Any, b: Any) -> int:
    return int(a) - int(b)


# `${minus:${budget.student_epochs},${budget.finetune_epochs}}` splits one epoch budget between the
# stages of an order, so every order trains its student for the same number of epochs.
OmegaConf.register_resolver("minus", _minus, replace=True)
