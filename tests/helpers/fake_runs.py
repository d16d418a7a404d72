"""metrics.json dicts as runs write them (the new contract: config, start, epochs, ...), for the
report and sweep-summary tests: no training, every number chosen by the test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdprune.results import METRICS_FILE, config_fingerprint, write_json, write_metrics
from kdprune.run_record import RECORD_VERSION_KEY, build_record
from kdprune.schedules.names import ORDER_NAMES

ORDERS = ORDER_NAMES  # the natural sequence: prune_then_distill, distill_then_prune, joint
STAGES = {
    "prune_then_distill": ["distill", "distill"],
    "distill_then_prune": ["distill", "finetune"],
    "joint": ["joint", "finetune"],
}


def fake_config(
    order: str, ratio: float, seed: int, kd: str = "hinton", temperature: float = 4.0
) -> dict[str, Any]:
    """A resolved config shaped like conf/'s (Hydra node removed)."""
    schedule: dict[str, Any] = {"name": order, "finetune_epochs": 1}
    if order == "joint":
        schedule["pruning_steps"] = 8
    kd_group = {"name": kd} if kd == "none" else {"name": kd, "temperature": temperature}
    return {
        "seed": seed,
        "model": {"name": "lenet5", "_target_": "kdprune.models.lenet5", "widths": [6, 16]},
        "dataset": {"name": "digits", "num_classes": 10},
        "teacher": {"model": None, "epochs": 6, "seed": seed},
        "schedule": schedule,
        "kd": {**kd_group, "alpha": 0.9} if kd != "none" else kd_group,
        "prune_method": {"name": "l1", "ratio": ratio, "unit": "channels"},
        "budget": {"student_epochs": 2, "finetune_epochs": 1},
        "student_init": "scratch",
        "paths": {"cache_dir": f"/tmp/cache-{seed}"},  # not configuration: left out
    }


def fake_metrics(
    order: str,
    ratio: float,
    seed: int,
    val: float,
    test: float,
    *,
    kd: str = "hinton",
    temperature: float = 4.0,
    speedup: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A metrics dict with every ledger key the report reads; `extra` overrides any key."""
    params_after = int(10_000 * (1 - ratio) ** 2)
    speedup = speedup if speedup is not None else 1 / (1 - ratio) ** 2
    config = fake_config(order, ratio, seed, kd, temperature)
    record = {
        "status": "ok",
        "order": order,
        "model": "lenet5",
        "dataset": "digits",
        "seed": seed,
        "method": "l1",
        "kind": "structured",
        "kd": kd,
        "target_ratio": ratio,
        "unit": "channels",
        "params_before": 10_000,
        "params_after": params_after,
        "params_removed_fraction": 1 - params_after / 10_000,
        "nonzero_fraction": 1.0,
        "weight_sparsity": 1 - params_after / 10_000,
        "macs_before": 50_000,
        "macs_after": 50_000 / speedup,
        "macs_removed_fraction": 1 - 1 / speedup,
        "macs_speedup": speedup,
        "channel_ratio": ratio,
        "round_to": None,
        "cpu_latency_ms_bs1_before": 1.0,
        "cpu_latency_ms_bs1_after": 0.8,
        "cpu_speedup_bs1": 1.25,
        "cpu_latency_ms_bs64_before": 4.0,
        "cpu_latency_ms_bs64_after": 2.0,
        "cpu_speedup_bs64": 2.0,
        "file_size_bytes": 40_000,
        "teacher_val_acc": 0.95,
        "teacher_test_acc": 0.94,
        "teacher_model": "lenet5",
        "after_prune_val_acc": val / 2,
        "val_acc": val,
        "test_acc": test,
        "val_loss": 1 - val,
        "test_loss": 1 - test,
        "config": config,
        "config_fingerprint": config_fingerprint(config),
        "student_init": "scratch",
        "start": {"init": "scratch", "weights": f"scratch:seed{seed}", "inherited_epochs": None},
        "epochs": {"inherited": None, "student": 2, "total": 2},
        "select_epoch": "last",
        "data_identity": "digits-0123",
        "timings": {"teacher": 1.0, "prune": 0.1, "total": 3.0},
        "history": [{"stage": "teacher", "epoch": 1, "val_acc": 0.9}]
        + [{"stage": s, "epoch": i + 1, "val_acc": val} for i, s in enumerate(STAGES[order])],
    }
    return build_record(record, extra)


def legacy(metrics: dict[str, Any]) -> dict[str, Any]:
    """The same run as written before metrics.json held config, start, epochs, ... (and its
    status and record version): write it with `write_run`."""
    new = ("config", "config_fingerprint", "student_init", "start", "epochs", "weight_sparsity")
    new += ("select_epoch", "data_identity", "teacher_model", "status", RECORD_VERSION_KEY)
    return {k: v for k, v in metrics.items() if k not in new}


def write_run(run_dir: Any, metrics: dict[str, Any]) -> None:
    """Write a run's metrics.json: a record of this version through `write_metrics` (which
    checks it), one without `record_version` as older kdprune wrote it (unchecked)."""
    if RECORD_VERSION_KEY in metrics:
        write_metrics(run_dir, metrics)
    else:
        write_json(Path(run_dir) / METRICS_FILE, metrics)


# The digits data set as conf/dataset/digits.yaml builds it (resolved): the report reads the test
# labels of runs with predictions from here.
DIGITS_SPLITS = {"_target_": "kdprune.data.digits", "val_size": 0.15, "test_size": 0.2}


def digits_test_labels() -> Any:
    """The digits test split's labels, in the order runs save their predictions."""
    from kdprune.data import digits

    return digits().test.labels.numpy()


def with_predictions(
    metrics: dict[str, Any], folder: Any, correct: Any, labels: Any
) -> dict[str, Any]:
    """`metrics` of a digits run whose test predictions, written into `folder`, are right
    exactly where `correct` (a bool per test image) says; its test_acc follows from them."""
    import numpy as np
    import torch

    from kdprune.predictions import write_predictions

    predictions = np.where(correct, labels, (labels + 1) % 10)
    name = write_predictions(folder, torch.as_tensor(predictions), 10).name
    config = metrics["config"]
    splits = {**DIGITS_SPLITS, "split_seed": metrics["seed"]}
    config = {**config, "dataset": {**config["dataset"], "splits": splits}}
    test = float(np.mean(correct))
    return {**metrics, "config": config, "test_acc": test, "test_predictions_file": name}


def finished_job(run_dir: Any, value: Any, metrics: dict[str, Any]) -> Any:
    """A completed Hydra job of a sweep's trial, as a worker gets it back from its launcher: it
    returned `value` (what `sweep_metric` names) and left `metrics` in its run folder `run_dir`."""
    from pathlib import Path

    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    from kdprune.results import write_metrics

    write_metrics(Path(run_dir), metrics)
    job = JobReturn()
    job.status, job.return_value = JobStatus.COMPLETED, value
    job.hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(run_dir)}}})
    return job
