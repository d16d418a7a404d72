"""Per-group latency tables: what cutting one channel group to a width saves, measured.

HALP (Shen et al., NeurIPS 2022) allocates a latency budget over a network's channel groups
from a lookup table of measured latencies. No maintained library builds such a table for an
arbitrary model and runtime (Torch-Pruning scores by MACs alone), so kdprune does, with the
ledger's protocol: for each Torch-Pruning dependency group (the channels that go together: a
residual stream is one group) every candidate width is cut alone, on a copy, and timed
interleaved with the dense model on the named `kdprune.metrics.LatencyTarget`. The entry is the
fraction of the dense latency it removes, 1 - cut ms / dense ms, both from the same run, so a
neighbour's load falls on both alike.

A table depends on the architecture (every layer's type and widths), the input shape, the
target (runtime, batch, threads, protocol), the CPU (model and ISA) and Torch-Pruning's version,
never on the weights: it is kept in `folder` under a hash of those, like a trained teacher
(`kdprune.cache.teacher_cache`), written to a temporary name and renamed under a file lock, and
a later run (another seed, order or importance) loads it instead of measuring again. Widths it
lacks (another rounding asks for other widths) are measured and added.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch_pruning as tp
from filelock import FileLock
from torch import Tensor, nn

from kdprune.metrics.latency_target import LatencyTarget
from kdprune.pruning.calibration import autograd_enabled
from kdprune.pruning.graph import keeping, prunable_groups
from kdprune.pruning.masks import clone_model
from kdprune.results import atomic_write

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the meaning of a table entry changes, so old files stop matching
GRID_POINTS = 16  # widths tried per group where kept widths are not rounded
OUT_HANDLERS = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
Cut = Callable[[dict[str, float]], nn.Module]  # layer path -> channel ratio: a pruned copy


@dataclass(frozen=True)
class ChannelGroup:
    """One dependency group: its root layer (Torch-Pruning's), the layers whose output channels
    it holds (all cut to one width) and its width now."""

    root: str
    layers: tuple[str, ...]
    width: int

    def ratios(self, width: int) -> dict[str, float]:
        """Per-layer channel ratios that leave `width` channels."""
        return {path: keeping(self.width, width) for path in self.layers}


def channel_groups(
    model: nn.Module, example_inputs: Tensor, ignored: Iterable[str]
) -> list[tuple[ChannelGroup, Any]]:
    """The prunable dependency groups of `model` outside `ignored`, each with its Torch-Pruning
    group (what an importance criterion scores)."""
    names = {module: path for path, module in model.named_modules()}
    out = []
    for group in prunable_groups(model, example_inputs, ignored):
        layers = [names[dep.target.module] for dep, _ in group if dep.handler in OUT_HANDLERS]
        root = names[group[0].dep.target.module]
        width = len(group[0].idxs)
        out.append((ChannelGroup(root, tuple(dict.fromkeys(layers)), width), group))
    return out


def width_grid(width: int, max_layer_ratio: float, round_to: int | None) -> tuple[int, ...]:
    """The narrower widths a group of `width` channels may be cut to, widest first: multiples of
    `round_to`, else evenly spaced ones, none below what `max_layer_ratio` keeps; at most
    GRID_POINTS, evenly spread over the range (a wide layer of a large model would otherwise
    cost a table of hundreds of timed cuts)."""
    least = max(1, int(width * (1.0 - max_layer_ratio)))
    widths: Iterable[int]
    if round_to:
        widths = range(round_to * ((width - 1) // round_to), 0, -round_to)
    else:
        widths = (
            round(width * (1 - max_layer_ratio * i / GRID_POINTS))
            for i in range(1, GRID_POINTS + 1)
        )
    grid = sorted({w for w in widths if least <= w < width}, reverse=True)
    if len(grid) > GRID_POINTS:
        picks = {round(i * (len(grid) - 1) / (GRID_POINTS - 1)) for i in range(GRID_POINTS)}
        grid = [grid[i] for i in sorted(picks)]
    return tuple(grid)


Savings = dict[str, dict[int, float]]  # group root -> width -> fraction of dense latency removed


class LatencyTable:
    """The measured savings of one architecture on one target, kept under `folder` (None: not
    kept). `measured` counts the cuts this object has timed (0 when every width was read)."""

    def __init__(self, target: LatencyTarget, folder: str | Path | None = None) -> None:
        self.target = target
        self.folder = None if folder is None else Path(folder)
        self.measured = 0

    def path(self, model: nn.Module, input_shape: Sequence[int]) -> Path | None:
        """Where the table of `model` (its architecture) on inputs of `input_shape` is kept."""
        if self.folder is None:
            return None
        spec = json.dumps(
            [FORMAT, repr(model), list(input_shape), list(self.target.key()), tp.__version__],
            default=str,
        )
        key = hashlib.sha256(spec.encode()).hexdigest()[:16]
        return self.folder / f"{type(model).__name__}-{key}.json"

    def savings(
        self,
        model: nn.Module,
        input_shape: Sequence[int],
        grids: Mapping[ChannelGroup, Sequence[int]],
        cut: Cut,
    ) -> Savings:
        """Every group's savings at the widths of its grid: read from the kept table, the missing
        ones measured (each group's cuts interleaved with `model`) and added to it."""
        path = self.path(model, input_shape)
        lock = nullcontext() if path is None else FileLock(f"{path}.lock")
        with lock:
            table = _read(path)
            before = self.measured
            for group, widths in grids.items():
                known = table.setdefault(group.root, {})
                missing = [w for w in widths if w not in known]
                if missing:
                    known.update(self._measure(model, input_shape, group, missing, cut))
            if path is not None and self.measured > before:
                _write(path, table)
        return {g.root: {w: table[g.root][w] for w in grids[g]} for g in grids}

    def _measure(
        self,
        model: nn.Module,
        input_shape: Sequence[int],
        group: ChannelGroup,
        widths: Sequence[int],
        cut: Cut,
    ) -> dict[int, float]:
        """The savings of `group` cut alone to each of `widths`, timed with the dense model."""
        log.info(
            "latency table: timing %s at %d width(s) on %s",
            group.root, len(widths), self.target.describe(),
        )  # fmt: skip
        models = {"dense": model, **{str(w): cut(group.ratios(w)) for w in widths}}
        ms = self.target.times_ms(models, input_shape)
        self.measured += len(widths)
        return {w: 1.0 - ms[str(w)] / ms["dense"] for w in widths}


def _read(path: Path | None) -> dict[str, dict[int, float]]:
    """The kept table (group root -> width -> saving); empty when missing or unreadable (then
    measured again, never trusted)."""
    if path is None or not path.exists():
        return {}
    try:
        entry = json.loads(path.read_text())
        if entry.get("format") != FORMAT:
            raise ValueError(f"format {entry.get('format')}, not {FORMAT}")
        return {
            root: {int(w): float(s) for w, s in widths.items()}
            for root, widths in entry["savings"].items()
        }
    except (ValueError, KeyError, AttributeError, TypeError) as err:
        log.warning("latency table %s does not read (%s); measuring it again", path, err)
        return {}


def _write(path: Path, table: Mapping[str, Mapping[int, float]]) -> None:
    entry = {
        "format": FORMAT,
        "savings": {root: {str(w): s for w, s in sorted(ws.items())} for root, ws in table.items()},
    }
    blob = json.dumps(entry, indent=1).encode()
    atomic_write(path, lambda fh: fh.write(blob))


def group_scores(
    model: nn.Module,
    example_inputs: Tensor,
    ignored: Iterable[str],
    importance: Callable[..., Tensor | None],
    calibrate: Callable[[nn.Module], None],
) -> dict[str, Tensor]:
    """`importance`'s per-channel scores of `model`'s groups, by group root, read on a copy that
    `calibrate` prepared (gradients for Taylor / Hessian); the groups it does not score left
    out (BN-scale where a group has no BatchNorm)."""
    copy = clone_model(model)
    with autograd_enabled():
        calibrate(copy)
        pairs = channel_groups(copy, example_inputs, ignored)
        scores = {g.root: importance(tp_group) for g, tp_group in pairs}
    return {root: s for root, s in scores.items() if s is not None}


def removed_importance(scores: Tensor, width: int) -> float:
    """The importance a group loses when cut to `width`: its smallest scores but `width`."""
    drop = scores.numel() - width
    return 0.0 if drop <= 0 else float(scores.detach().float().sort().values[:drop].sum())
