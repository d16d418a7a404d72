"""Pruned-model files: data only (config, pruning history, weights), never a pickled module.

A file is a `torch.save`d dict with fixed keys:

- `format`: "kdprune.model"; `version`: 2 (version 1 files, without `decompositions`, still load)
- `model_cfg`: the base model config (plain dict with `_target_`, as from
  `OmegaConf.to_container(cfg.model, resolve=True)`), rebuilt with
  `kdprune.instantiation.instantiate`
- `history`: Torch-Pruning's pruning history, `[[module_path, is_out_channel, [indices]], ...]`,
  replayed in order on the rebuilt model; `[]` for a dense or mask-pruned model
- `decompositions`: low-rank steps, `[{"path", "kind", "ranks", "after"}, ...]`, each replacing
  the layer at `path` by an untrained factorised stand-in (`kdprune.decomposition.rebuild`) once
  the first `after` steps of `history` are replayed; `[]` for a model with none
- `input_shape`: `[1, C, H, W]` used to trace the model for the replay (null without either)
- `extra`: any JSON-serialisable dict the caller adds (metrics, run id, ...)
- `state_dict`: the weights on CPU; pruning masks are folded in, so it is a plain state_dict
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from kdprune.decomposition import rebuild
from kdprune.errors import ConfigError, KdpruneError
from kdprune.instantiation import config_dict
from kdprune.models import build
from kdprune.pruning.graph import replay_history  # not via structured: export -> io stays acyclic
from kdprune.pruning.masks import plain_state_dict
from kdprune.results import atomic_write

FORMAT = "kdprune.model"
VERSION = 2
# The keys of each version a file may have; a file of an older version still loads.
KEYS = {
    1: ("format", "version", "model_cfg", "history", "input_shape", "extra", "state_dict"),
    2: ("format", "version", "model_cfg", "history", "decompositions", "input_shape", "extra",
        "state_dict"),
}  # fmt: skip


def _input_shape(model_cfg: Mapping[str, Any], input_shape: Sequence[int] | None) -> list[int]:
    if input_shape is not None:
        return [int(n) for n in input_shape]
    if "in_channels" in model_cfg and "image_size" in model_cfg:
        size = int(model_cfg["image_size"])
        return [1, int(model_cfg["in_channels"]), size, size]
    raise ConfigError(
        "save_model needs input_shape to replay a pruning history: model_cfg has no "
        "in_channels/image_size."
    )


def _split_history(steps: list) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    """Torch-Pruning steps, and decomposition steps marked with how many of those precede them."""
    history: list[list[Any]] = []
    decompositions: list[dict[str, Any]] = []
    for step in steps:
        if isinstance(step, Mapping):
            decompositions.append(
                {
                    "path": str(step["path"]),
                    "kind": str(step["kind"]),
                    "ranks": [int(r) for r in step["ranks"]],
                    "after": len(history),
                }
            )
        else:
            name, out, idxs = step
            history.append([str(name), bool(out), [int(i) for i in idxs]])
    return history, decompositions


def save_model(
    path: str | os.PathLike,
    model: nn.Module,
    model_cfg: Mapping[str, Any],
    history: list | None = None,
    extra: Mapping[str, Any] | None = None,
    *,
    input_shape: Sequence[int] | None = None,
) -> Path:
    """Write `model` atomically (temp file in the same folder, then os.replace); return the path.

    `history` is every `PruneResult.history` applied to the model since it was built, concatenated
    in order (None or [] for a dense or mask-pruned model): Torch-Pruning steps and decomposition
    steps ({path, kind, ranks}) in the order they happened. Masks are folded into the saved
    weights without touching `model`. `input_shape` ([1, C, H, W]) is needed with a history
    unless `model_cfg` has `in_channels` and `image_size`.
    """
    path = Path(path)
    if isinstance(model_cfg, DictConfig):
        model_cfg = config_dict(model_cfg)
    if "_target_" not in model_cfg:
        raise ConfigError("save_model needs a model_cfg with a _target_ to rebuild the model.")
    history, decompositions = _split_history(history or [])
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "model_cfg": dict(model_cfg),
        "history": history,
        "decompositions": decompositions,
        "input_shape": _input_shape(model_cfg, input_shape) if history or decompositions else None,
        "extra": dict(extra or {}),
    }
    json.dumps(meta)  # raises TypeError now rather than writing a file that cannot be read back
    payload = {**meta, "state_dict": plain_state_dict(model)}
    return atomic_write(path, lambda file: torch.save(payload, file))


def read_model_file(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load and check a model file's dict (weights_only); raise KdpruneError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise KdpruneError(f"model file {path} does not exist.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise KdpruneError(f"model file {path} is corrupt or not a torch file ({err}).") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise KdpruneError(f"{path} is not a kdprune model file.")
    version = payload.get("version")
    keys = KEYS.get(version) if isinstance(version, int) else None
    if keys is None or any(key not in payload for key in keys):
        raise KdpruneError(f"{path} has version {payload.get('version')!r} or misses keys.")
    return {"decompositions": [], **payload}


def load_model(path: str | os.PathLike, map_location: Any = "cpu") -> nn.Module:
    """Rebuild the model of a file: instantiate its config, replay its history, load weights.

    The model is returned in eval mode, on `map_location` when that names a device.
    """
    payload = read_model_file(path, map_location)
    # Replaying a history traces the model with autograd, and weights made inside a caller's
    # inference_mode could never be trained again: build outside both.
    with torch.inference_mode(False), torch.enable_grad():
        return _rebuild(payload, path, map_location)


def _rebuild(payload: dict[str, Any], path: str | os.PathLike, map_location: Any) -> nn.Module:
    try:
        model = build(payload["model_cfg"])
        _replay(model, payload)
        model.load_state_dict(payload["state_dict"])
    except KdpruneError:
        raise
    except Exception as err:
        raise KdpruneError(f"model file {path} does not rebuild its model ({err}).") from err
    if isinstance(map_location, str | torch.device):
        model = model.to(map_location)
    return model.eval()


def _replay(model: nn.Module, payload: dict[str, Any]) -> None:
    """Replay the pruning history and the decomposition steps in the order they happened."""
    history, done = payload["history"], 0
    if history and not payload["input_shape"]:
        raise ValueError("it has a pruning history but no input_shape to replay it on")
    example = torch.zeros(payload["input_shape"] or [0])  # unused without a history
    for step in payload["decompositions"]:
        replay_history(model, example, history[done : step["after"]])
        done = max(done, int(step["after"]))
        try:
            rebuild(model, step)
        except ConfigError as err:  # a step this code cannot rebuild: the file's fault
            raise ValueError(str(err)) from err
    replay_history(model, example, history[done:])
