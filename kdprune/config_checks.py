"""Checks of a composed config that run before any data is loaded or any model is trained.

Each check raises ConfigError with one sentence naming the key, the value and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from kdprune.distillation.kd_checks import validate_kd
from kdprune.errors import ConfigError
from kdprune.run_record import VAL_ACC
from kdprune.sweeping.selectable import (
    check_latency_target,
    check_selectable,
    objective_names,
)
from kdprune.values import number, whole_number

if TYPE_CHECKING:
    import torch

# This module imports torch (models, pruners, optimizers) only inside the checks that build
# something, so a command line that a value check refuses answers without loading it (~2 s).


def check_required(cfg: DictConfig) -> None:
    """Every `???` value (e.g. dataset.num_classes of an image folder) is set."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{missing[0]} must be set, e.g. on the command line: {missing[0]}=...")


def _leaves(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for name, value in node.items():
            yield from _leaves(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, f"{key}[{i}]")
    else:
        yield key, node


def check_finite(cfg: DictConfig) -> None:
    """No float knob is inf or nan (as typed: interpolations are left to the checks that use them);
    a value that only range checks would meet (kd.temperature=inf) would train into NaN."""
    for key, value in _leaves(OmegaConf.to_container(cfg, resolve=False)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")


def check_run(cfg: DictConfig) -> None:
    """The run's own keys: seed, device, measurement settings, the `distributed` node."""
    from kdprune.distributed import check_options
    from kdprune.engine import pick_device

    whole_number(cfg.seed, "seed")
    whole_number(cfg.teacher.seed, "teacher.seed")
    whole_number(cfg.get("data_seed", cfg.seed), "data_seed")
    whole_number(cfg.get("split_seed", cfg.seed), "split_seed")
    pick_device(str(cfg.device))
    whole_number(cfg.measure.repeats, "measure.repeats", 1)
    whole_number(cfg.measure.warmup, "measure.warmup")
    if cfg.measure.get("threads") is not None:
        whole_number(cfg.measure.threads, "measure.threads", 1)
    check_options(cfg.get("distributed") or {})


def check_latency_runtime(cfg: DictConfig) -> None:
    """A latency target on the INT8 runtime needs a run that ships an INT8 model."""
    latency = cfg.prune_method.get("latency") or {}
    if cfg.prune_method.get("unit") != "latency" or latency.get("runtime") != "onnxruntime_int8":
        return
    if cfg.quantize.get("name", "none") == "none":
        raise ConfigError(
            "prune_method.latency.runtime=onnxruntime_int8 times the INT8 model of a quantized "
            "run, and this run does not quantize (quantize=none): set quantize=ptq or qat, or "
            "runtime onnxruntime"
        )


def check_epochs(cfg: DictConfig) -> None:
    """Every epoch count is a whole number >= 0, and the fine-tune share fits the budget."""
    whole_number(cfg.teacher.epochs, "teacher.epochs")
    total = whole_number(cfg.budget.student_epochs, "budget.student_epochs")
    finetune = whole_number(cfg.budget.finetune_epochs, "budget.finetune_epochs")
    if finetune > total:
        raise ConfigError(
            f"budget.finetune_epochs ({finetune}) exceeds budget.student_epochs ({total}), "
            "the student's whole budget"
        )
    for key, value in cfg.schedule.items():
        if str(key).endswith("_epochs"):
            whole_number(value, f"schedule.{key}")


def check_trainer(cfg: DictConfig) -> None:
    """Batch sizes, caps, threads and the progress setting."""
    t = cfg.trainer
    whole_number(t.batch_size, "trainer.batch_size", 1)
    whole_number(t.eval_batch_size, "trainer.eval_batch_size", 1)
    whole_number(t.num_workers, "trainer.num_workers")
    for key in ("max_batches", "threads", "keep_freed_memory_mb"):
        if t.get(key) is not None:
            whole_number(t[key], f"trainer.{key}", 1)
    number(t.label_smoothing, "trainer.label_smoothing", 0.0, 0.999)
    if t.get("select_epoch", "best_val") not in ("best_val", "last"):
        raise ConfigError(f"trainer.select_epoch must be best_val or last, got {t.select_epoch!r}")
    if t.get("progress") not in (True, False, None, "auto"):
        raise ConfigError(f"trainer.progress must be true, false or auto, got {t.progress!r}")
    if t.get("channels_last", True) not in (True, False, "always"):
        raise ConfigError(
            "trainer.channels_last must be true (on CUDA), always or false, "
            f"got {t.channels_last!r}"
        )


def check_optimizers(cfg: DictConfig) -> None:
    """Build each optimizer on a dummy parameter and each lr schedule: bad values fail here."""
    import torch

    from kdprune.instantiation import instantiate

    for key, node in (("optimizer", cfg.optimizer), ("teacher.optimizer", cfg.teacher.optimizer)):
        for name, value in node.items():
            if isinstance(value, str) and not str(name).startswith("_"):
                raise ConfigError(f"{key}.{name} must be a number, got {value!r}")
        try:
            instantiate(node)([torch.zeros(1, requires_grad=True)])
        except (TypeError, ValueError) as err:  # torch checks lr, momentum, betas, ...
            raise ConfigError(f"{key} cannot be built: {str(err).splitlines()[0]}") from None
    for key, node in (("lr_scheduler", cfg.lr_scheduler), ("teacher", cfg.teacher.lr_scheduler)):
        try:
            instantiate(node)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{key} cannot be built: {str(err).splitlines()[0]}") from None


def check_schedule(cfg: DictConfig) -> None:
    """The student's start, then the order's own options and rules (`Order.check`): combinations
    the order would only notice late, such as pruning an untrained network."""
    from kdprune.schedules.names import ORDER_NAMES
    from kdprune.schedules.orders import order_of
    from kdprune.schedules.start import INITS, same_architecture

    name = cfg.schedule.name
    if name not in ORDER_NAMES:
        raise ConfigError(f"schedule.name must be one of {', '.join(ORDER_NAMES)}, got {name!r}")
    if cfg.student_init not in INITS:
        raise ConfigError(
            f"student_init must be one of {', '.join(INITS)}, got {cfg.student_init!r}"
        )
    if cfg.student_init == "teacher" and not same_architecture(cfg):
        raise ConfigError(
            "student_init=teacher needs the teacher to share the student's architecture; "
            "student_init=trained starts from the dense trained network of the student's own"
        )
    if (cfg.student_init == "checkpoint") != bool(cfg.student_checkpoint):
        raise ConfigError("student_init=checkpoint and student_checkpoint=<file> go together")
    order_of(cfg).check(cfg)


def check_sweep_metric(cfg: DictConfig) -> None:
    """What a sweep optimises is one metric or a list of them, none on the test set, and a
    latency-target key (`latency_speedup`) only in a run that measures one (`unit=latency`)."""
    names = cfg.get("sweep_metric", VAL_ACC)
    unit = cfg.prune_method.get("unit")
    for name in objective_names(names):
        check_selectable(name, "sweep_metric")
        check_latency_target(name, "sweep_metric", unit)


def check_models(cfg: DictConfig) -> None:
    """Build the student and teacher (cheap), load any checkpoint into them, check KD layers."""
    from kdprune.models import build
    from kdprune.schedules.context import load_state_dict_file

    student = build(cfg.model)
    teacher = build(cfg.teacher.model) if cfg.teacher.model is not None else build(cfg.model)
    if cfg.get("student_checkpoint"):
        load_state_dict_file(student, cfg.student_checkpoint, "student")
    if cfg.teacher.get("checkpoint"):
        load_state_dict_file(teacher, cfg.teacher.checkpoint, "teacher")
    validate_kd(cfg.kd, student=student, teacher=teacher)
    from kdprune.schedules.orders import order_of

    check_target(cfg, teacher if order_of(cfg).prunes_teacher(cfg) else student)


def check_target(cfg: DictConfig, model: torch.nn.Module) -> None:
    """Bind the pruner to the architecture it will prune: it refuses, in one line, a model with
    nothing to prune or a params / MACs target that no cut up to the per-layer cap reaches (the
    cut is searched here, on fresh weights, so a target that rounding cannot hit fails now)."""
    import torch

    from kdprune.instantiation import instantiate
    from kdprune.models.common import example_inputs

    x = example_inputs(cfg.dataset, batch=2)
    y = torch.zeros(2, dtype=torch.long)
    factory = instantiate(cfg.prune_method.pruner)
    factory(model=model, example_inputs=x[:1], calibration=[(x, y)]).check_target()


def check_values(cfg: DictConfig) -> None:
    """The checks of plain values, which need no torch: they run first, so they answer fast."""
    check_required(cfg)
    check_finite(cfg)
    check_trainer(cfg)
    validate_kd(cfg.kd)
    check_sweep_metric(cfg)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError (one sentence) for the first problem found in a composed config."""
    check_values(cfg)  # before the imports below, which load torch
    from kdprune.pruning import validate as validate_prune_method
    from kdprune.quantization.quantize_checks import check_quantize_budget, check_quantize_model

    check_run(cfg)
    check_quantize_budget(cfg)  # before check_epochs: it says why a stage's epochs went negative
    check_epochs(cfg)
    check_optimizers(cfg)
    validate_prune_method(cfg.prune_method)
    check_latency_runtime(cfg)
    check_schedule(cfg)
    check_models(cfg)
    check_quantize_model(cfg)
