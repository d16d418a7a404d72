"""The real conf/, composed and shrunk for tests: one list of tiny overrides, one way to compose."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from kdprune import paths

# Small settings for every test run: digits, a few epochs, no progress bars, one thread.
TINY = [
    "dataset=digits",
    "model=lenet5",
    "device=cpu",
    "teacher.epochs=3",
    "trainer.batch_size=64",
    "trainer.progress=false",
    "trainer.num_workers=0",
    "trainer.threads=1",
    "measure.repeats=2",
    "measure.warmup=1",
    "logger=none",
    # round_to: auto rounds to this CPU's channel block; tests pin it so no result depends on
    # the CPU (the tests of auto pass their own flags: tests/test_round_to.py).
    "++prune_method.round_to=null",
]


def compose_cfg(*overrides: str) -> DictConfig:
    """conf/ composed with TINY, then `overrides` (later ones win)."""
    with initialize_config_dir(config_dir=str(paths.CONF_DIR)):
        return compose("config", overrides=[*TINY, *overrides])


def group_node(group: str, option: str, **values: Any) -> DictConfig:
    """The `group` node of conf/ composed with `group=option`, then `values` set on it."""
    cfg = compose_cfg(f"{group}={option}")
    for key, value in values.items():
        OmegaConf.update(cfg, f"{group}.{key}", value, force_add=True)
    return cfg[group]


def model_cfg(name: str, num_classes: int, in_channels: int, image_size: int) -> dict[str, Any]:
    """conf/model/<name>.yaml resolved for a data set of that shape, as a run saves it."""
    cfg = compose_cfg(
        f"model={name}",
        f"dataset.num_classes={num_classes}",
        f"dataset.in_channels={in_channels}",
        f"dataset.image_size={image_size}",
    )
    return OmegaConf.to_container(cfg.model, resolve=True)


def run_args(tmp_path: Path, *overrides: str) -> list[str]:
    """Command-line overrides for a tiny run whose cache and data live under tmp_path."""
    return [*TINY, f"paths.cache_dir={tmp_path}/cache", f"paths.data_dir={tmp_path}/data",
            *overrides]  # fmt: skip
