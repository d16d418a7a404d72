"""`kdprune sensitivity`: the analysis of one trained model, end to end.

The model is a model file (`kdprune sensitivity outputs/runs/.../model.pt`, its run's config
under the user's overrides) or, without one, the teacher of the composed run (cached, trained
once if missing). The budget of the ratio file is the cut the composed `prune_method` makes
(its `unit` and `ratio`): the same MACs (params for unit=params), allocated by sensitivity.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from kdprune.errors import ConfigError
from kdprune.instantiation import instantiate, trusted
from kdprune.models import model_name
from kdprune.models.common import example_inputs
from kdprune.pruning.base import ignored_module_paths, pruner_class
from kdprune.pruning.structured import layer_widths
from kdprune.sensitivity.allocation import Allocation, allocate, predicted_drop
from kdprune.sensitivity.analysis import Cutter, scan
from kdprune.sensitivity.groups import PrunableGroup, prunable_groups
from kdprune.sensitivity.outputs import (
    CSV_FILE,
    PLOT_FILE,
    RATIOS_FILE,
    plot_table,
    write_ratios,
    write_table,
)

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
CALIBRATION_BATCHES = 8  # training batches for data-driven criteria (Taylor, Hessian)


@dataclass
class SensitivityResult:
    """What the analysis found and wrote."""

    source: str
    groups: list[PrunableGroup]
    allocation: Allocation
    unit: str
    seconds: float
    uniform_drop: float  # the accuracy drop the curves predict for the uniform cut
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the terminal: the groups' ratios and the budget kept."""
        counted = "params" if self.unit == "params" else "MACs"
        a = self.allocation
        lines = [f"{len(self.groups)} dependency groups of {self.source} in {self.seconds:.1f}s"]
        lines += [f"  {g.name}: ratio {a.group_ratios[g.name]:.4f}" for g in self.groups]
        lines.append(
            f"{counted} kept: {a.count:.0f} (the uniform cut keeps {a.budget:.0f}, "
            f"{100 * a.gap:.2f}% apart); predicted validation accuracy drop "
            f"{a.predicted_drop:.4f} (uniform: {self.uniform_drop:.4f}, summed per group)"
        )
        return "\n".join([*lines, *(f"wrote {path}" for path in self.files)])


def check_request(
    cfg: DictConfig, ratios: Sequence[float], val_batches: int | None, threads: int = 1
) -> None:
    """One-line errors, before any work: a structured one-shot method, a usable ratio grid."""
    cls = pruner_class(cfg.prune_method)
    if cls.kind != "structured" or cls.learns_while_training:
        raise ConfigError(
            "kdprune sensitivity removes channels with a one-shot criterion: prune_method must "
            f"be structured (l1, l2, taylor, fpgm, ...), not {cfg.prune_method.name}."
        )
    if not ratios:
        raise ConfigError("--ratios names no ratio.")
    cap = float(cfg.prune_method.get("max_layer_ratio", 0.9))
    for ratio in ratios:
        if not (isinstance(ratio, int | float) and math.isfinite(ratio) and 0 < ratio <= cap):
            raise ConfigError(f"--ratios must lie in (0, max_layer_ratio={cap}], got {ratio}.")
    if val_batches is not None and val_batches < 1:
        raise ConfigError(f"--val-batches must be at least 1, got {val_batches}.")
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}.")


def _teacher(cfg: DictConfig, device: torch.device, loaders, identity: str, out: Path):
    from kdprune.schedules.context import RunContext
    from kdprune.schedules.teacher_stage import train_teacher
    from kdprune.tracking.tracker import NullTracker

    ctx = RunContext(cfg, device, loaders, NullTracker(), out, data_identity=identity)
    teacher = train_teacher(ctx)
    return teacher.module.requires_grad_(True), f"teacher {teacher.weights}"


def _model(cfg, model_file, device, loaders, identity, out) -> tuple[nn.Module, str]:
    """The model to analyse (trainable, on the device) and what it is, in words."""
    if model_file is None:
        return _teacher(cfg, device, loaders, identity, out)
    from kdprune.pruning import load_model

    return load_model(model_file, map_location=device).requires_grad_(True), str(model_file)


def _evaluator(loader, device: torch.device, val_batches: int | None):
    from kdprune.engine import evaluate

    def run(model: nn.Module) -> dict[str, float]:
        try:
            return evaluate(model, loader, device, amp=False, max_batches=val_batches)
        except RuntimeError as err:  # shape mismatch: a model of another data set
            raise ConfigError(f"the model does not take these images ({err})") from None

    return run


def _loaders(cfg: DictConfig, device: torch.device):
    from kdprune.data import Augment, make_loaders

    splits = instantiate(cfg.dataset.splits)
    workers = 0 if splits.in_memory else min(4, os.cpu_count() or 1)
    t = cfg.trainer
    return splits, make_loaders(
        splits, t.batch_size, t.eval_batch_size, device, Augment(), cfg.seed, workers
    )


def run_sensitivity(
    cfg: DictConfig,
    model_file: str | None,
    out: Path,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    device: str = "cpu",
    val_batches: int | None = None,
    threads: int = 1,
) -> SensitivityResult:
    """Analyse the model, allocate ratios for the configured cut's budget, write the files;
    on `threads` torch CPU threads (many small copies: more threads rarely help, and on a
    shared CPU they slow it down)."""
    from kdprune.config_checks import validate
    from kdprune.engine import pick_device, process_settings
    from kdprune.schedules.context import progress_setting

    start, t = time.perf_counter(), cfg.trainer
    with trusted(cfg.get("trusted_targets") or ()):
        validate(cfg)
        check_request(cfg, ratios, val_batches, threads)
    with (
        trusted(cfg.get("trusted_targets") or ()),
        process_settings(threads, t.get("keep_freed_memory_mb")),
    ):
        torch_device = pick_device(device)
        torch.manual_seed(int(cfg.seed))
        splits, loaders = _loaders(cfg, torch_device)
        model, source = _model(cfg, model_file, torch_device, loaders, splits.identity, out)
        cutter, groups = _cutter(cfg, model, loaders, torch_device)
        evaluate = _evaluator(loaders.val, torch_device, val_batches)
        table = scan(cutter, groups, ratios, evaluate, progress_setting(cfg.trainer.progress))
        about = _about(cfg, source)
        title = f"{about['model']} on {about['dataset']}: {source}"
        files = [write_table(table, out / CSV_FILE), plot_table(table, out / PLOT_FILE, title)]
        allocation, uniform_drop = _allocate(cfg, cutter, groups, table)  # the table is written
    about["uniform_predicted_drop"] = round(uniform_drop, 6)
    files.append(write_ratios(out / RATIOS_FILE, allocation, about))
    seconds = time.perf_counter() - start
    return SensitivityResult(
        source, groups, allocation, cfg.prune_method.unit, seconds, uniform_drop, files
    )


def _cutter(cfg: DictConfig, model: nn.Module, loaders, device) -> tuple[Cutter, list]:
    example = example_inputs(cfg.dataset, device=device)
    factory = instantiate(cfg.prune_method.pruner, ratio=0.0, unit="channels", layer_ratios=None)
    calibration = []
    for x, y, _ in loaders.train:
        calibration.append((x, y))
        if len(calibration) >= CALIBRATION_BATCHES:
            break
    ignored = ignored_module_paths(model, cfg.prune_method.get("ignored_layers") or ())
    return Cutter(model, example, factory, calibration), prunable_groups(model, example, ignored)


def _allocate(cfg: DictConfig, cutter: Cutter, groups, table) -> tuple[Allocation, float]:
    """The configured uniform cut's count (MACs, or params for unit=params), the
    sensitivity-guided ratios that keep as much, and the drop predicted for the uniform cut."""
    index, counted = (1, "params") if cfg.prune_method.unit == "params" else (0, "macs")
    factory = instantiate(cfg.prune_method.pruner, layer_ratios=None)
    uniform = Cutter(cutter.model, cutter.example_inputs, factory, cutter.calibration).cut()
    budget, widths = cutter.count(uniform)[index], layer_widths(uniform)

    def measure(ratios: dict[str, float]) -> float:
        return cutter.count(cutter.cut(ratios))[index]

    allocation = allocate(table, groups, measure, budget, counted)
    uniform_ratios = {g.name: 1 - widths[g.name] / g.channels for g in groups}
    return allocation, predicted_drop(table, groups, uniform_ratios)


def _about(cfg: DictConfig, source: str) -> dict[str, Any]:
    """Where the ratios come from, for the head of the ratio file."""
    pm = cfg.prune_method
    return {
        "source": source,
        "model": model_name(cfg.model),
        "dataset": cfg.dataset.name,
        "criterion": pm.name,
        "uniform_cut": f"unit={pm.unit} ratio={pm.ratio}",
        "counted": "params" if pm.unit == "params" else "macs",
    }
