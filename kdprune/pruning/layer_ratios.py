"""Per-layer ratio files: which fraction of each layer's channels structured pruning removes.

A file is YAML with a `layer_ratios` mapping, module path -> channel ratio in [0, 1) (other keys
say where it came from; `kdprune sensitivity` writes one):

    layer_ratios:
      layer1.0: 0.3125
      layer2.0: 0.59375

`prune_method.layer_ratios=<file>` hands it to `StructuredPruner`, which passes it on as
Torch-Pruning's `pruning_ratio_dict`; layers it does not name are pruned at `ratio`. A group of
coupled layers is pruned at the ratio of its root layer: name every layer of a group.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kdprune.errors import ConfigError
from kdprune.pruning.base import check_ratio
from kdprune.results import atomic_write

KEY = "layer_ratios"


def _from_file(path: str | os.PathLike) -> Any:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"layer ratio file {str(file)!r} does not exist or is not a file.")
    try:
        content = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise ConfigError(f"layer ratio file {str(file)!r} is not readable YAML.") from None
    if not isinstance(content, Mapping) or not isinstance(content.get(KEY), Mapping):
        raise ConfigError(
            f"layer ratio file {str(file)!r} has no `{KEY}` mapping (module path -> ratio)."
        )
    return content[KEY]


def read_layer_ratios(
    source: str | os.PathLike | Mapping[str, Any], max_ratio: float = 1.0
) -> dict[str, float]:
    """Module path -> channel ratio, from a ratio file or a mapping; each ratio is checked to
    lie in [0, 1) and not above `max_ratio` (ConfigError otherwise)."""
    ratios = source if isinstance(source, Mapping) else _from_file(source)
    if not ratios:
        raise ConfigError("layer_ratios names no layer.")
    out = {}
    for path, ratio in ratios.items():
        value = check_ratio(ratio, f"layer_ratios[{path}]")
        if value > max_ratio:
            raise ConfigError(
                f"prune_method layer_ratios[{path}] = {value} exceeds max_layer_ratio {max_ratio}."
            )
        out[str(path)] = value
    return out


def write_layer_ratios(
    path: str | os.PathLike, ratios: Mapping[str, float], about: Mapping[str, Any]
) -> Path:
    """Write a ratio file: `about` (where the ratios came from) first, then `layer_ratios`."""
    content = {str(k): v for k, v in about.items()}
    content[KEY] = {str(k): float(v) for k, v in ratios.items()}
    text = yaml.safe_dump(content, sort_keys=False)
    return atomic_write(path, lambda fh: fh.write(text.encode()))
