"""Checks of a composed config that run before any data is loaded or any model is trained."""

from __future__ import annotations

from omegaconf import DictConfig

from kdprune.config import instantiate
from kdprune.distillation import validate_kd
from kdprune.errors import ConfigError
from kdprune.pruning import validate as validate_prune_method

ORDERS = ("prune_then_distill", "distill_then_prune", "joint")


def _non_negative_int(value, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key} must be a whole number >= 0, got {value!r}")


def check_epochs(cfg: DictConfig) -> None:
    """Every epoch count (teacher.epochs, schedule.*_epochs) is a whole number >= 0."""
    _non_negative_int(cfg.teacher.epochs, "teacher.epochs")
    for key, value in cfg.schedule.items():
        if str(key).endswith("_epochs"):
            _non_negative_int(value, f"schedule.{key}")


def check_trainer(cfg: DictConfig) -> None:
    """Batch sizes and caps are positive."""
    t = cfg.trainer
    for key in ("batch_size", "eval_batch_size"):
        if not isinstance(t[key], int) or t[key] < 1:
            raise ConfigError(f"trainer.{key} must be a whole number >= 1, got {t[key]!r}")
    if t.max_batches is not None and (not isinstance(t.max_batches, int) or t.max_batches < 1):
        raise ConfigError(f"trainer.max_batches must be null or >= 1, got {t.max_batches!r}")
    for key in ("threads", "keep_freed_memory_mb"):
        value = t.get(key)
        if value is not None and (type(value) is not int or value < 1):
            raise ConfigError(f"trainer.{key} must be null or a whole number >= 1, got {value!r}")
    if not 0 <= float(t.label_smoothing) < 1:
        raise ConfigError(f"trainer.label_smoothing must lie in [0, 1), got {t.label_smoothing}")


def check_schedule(cfg: DictConfig) -> None:
    """Options of the order that the order functions would only notice late."""
    s = cfg.schedule
    if s.get("prune_target", "student") not in ("student", "teacher"):
        raise ConfigError(
            f"schedule.prune_target must be student or teacher, got {s.prune_target!r}"
        )
    if s.get("student_init", "scratch") not in ("scratch", "teacher"):
        raise ConfigError(
            f"schedule.student_init must be scratch or teacher, got {s.student_init!r}"
        )
    same_arch = cfg.teacher.model is None or cfg.teacher.model == cfg.model
    if s.get("student_init") == "teacher" and not same_arch:
        raise ConfigError(
            "schedule.student_init=teacher needs the teacher to share the student's architecture"
        )
    if s.name == "joint" and cfg.kd.name == "fitnet" and cfg.prune_method.kind == "structured":
        raise ConfigError(
            "kd=fitnet cannot follow channels that schedule=joint removes while training; "
            "use kd=hinton or kd=attention"
        )


def check_models(cfg: DictConfig) -> None:
    """Build the student and teacher architectures (cheap) and check the KD layer paths on them."""
    student = instantiate(cfg.model)
    teacher = instantiate(cfg.teacher.model) if cfg.teacher.model is not None else student
    validate_kd(cfg.kd, student=student, teacher=teacher)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError (one sentence) for the first problem found in a composed config."""
    check_epochs(cfg)
    check_trainer(cfg)
    validate_kd(cfg.kd)
    validate_prune_method(cfg.prune_method)
    check_schedule(cfg)
    check_models(cfg)
