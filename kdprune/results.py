"""The files a run writes: `metrics.json` is the contract every reader goes through.

Its fields are declared in `kdprune.run_record`; `write_metrics` refuses a record that lacks a
required field and `read_metrics` reads every record version this kdprune knows.

Every metrics.json has `status`: `ok` for a finished run (a file without the key is one written
before it existed, and finished too), or `diverged` for a run whose loss became NaN or infinite.
A diverged run's file holds only `record_version`, `status`, `diverged` ({stage, epoch, step,
error}: where it happened), `order`, `model`, `dataset`, `seed`, `config` and
`config_fingerprint`: readers use `run_status` and keep such runs out of every statistic (the
report lists them apart).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from kdprune import run_record
from kdprune.run_record import STATUS_DIVERGED as STATUS_DIVERGED  # declared there, used here
from kdprune.run_record import STATUS_OK as STATUS_OK

METRICS_FILE = "metrics.json"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(file)` on a temporary file beside `path`, then rename it over `path`.

    Readers see the old file or the whole new one, never half of it: a killed process leaves at
    most a hidden `.tmp` file that nothing reads.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except OSError as err:  # a full disk, say: name the file (a write's error names none)
        Path(tmp).unlink(missing_ok=True)
        raise type(err)(err.errno, err.strerror or str(err), str(path)) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) atomically (temporary file, then rename)."""
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write JSON atomically (temporary file, then rename)."""
    text = json.dumps(_jsonable(data), indent=2) + "\n"
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def write_metrics(run_dir: str | os.PathLike, metrics: dict[str, Any]) -> Path:
    """Write a run's `metrics.json`: a record built by `run_record.build_record`, with every
    field its status requires (`run_record.IncompleteRecord` otherwise, and nothing written)."""
    run_record.check_record(metrics)
    return write_json(Path(run_dir) / METRICS_FILE, metrics)


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """Read a run's `metrics.json` (given the file or its run folder), of any record version
    this kdprune reads (`run_record.upgrade`; a newer one raises `run_record.NewerRecord`)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    with open(path) as fh:
        return run_record.upgrade(json.load(fh), str(path))


def run_status(metrics: Mapping[str, Any]) -> str:
    """A run's status from its metrics: `ok` (also for files written before `status` existed)."""
    return run_record.status(metrics)


def diverged_runs(folder: str | os.PathLike) -> list[tuple[Path, dict[str, Any]]]:
    """(run folder, metrics) of every diverged run's metrics.json below `folder`, in path order."""
    found = []
    for path in sorted(Path(folder).rglob(METRICS_FILE)):
        try:
            metrics = read_metrics(path)
        except (OSError, json.JSONDecodeError):
            continue  # the report's own reader says which files it skipped and why
        if isinstance(metrics, dict) and run_status(metrics) == STATUS_DIVERGED:
            found.append((path.parent, metrics))
    return found


def where_diverged(metrics: Mapping[str, Any]) -> str:
    """Where a diverged run's loss went non-finite, e.g. `distill epoch 1 step 3`."""
    where = metrics.get(run_record.DIVERGED) or {}
    return (
        f"{where.get('stage', '?')} epoch {where.get('epoch', '?')} step {where.get('step', '?')}"
    )


# Keys of a run's resolved config that say where or how a run was watched, not what it computed:
# left out of its fingerprint, so runs that differ only in them (and in their seeds) are pooled.
NOT_CONFIGURATION = (
    "seed",
    "data_seed",
    "split_seed",
    "dataset.splits.split_seed",  # follows split_seed: a seed, like the others
    "teacher.seed",
    "paths",
    "hydra",
    "logger",
    "sweep_name",
    "sweep_metric",
    "trusted_targets",
    "measure",
    "resume",
    "distributed",
    "trainer.progress",
    "trainer.num_workers",
    "trainer.threads",
    "trainer.keep_freed_memory_mb",
    "dataset.splits.root",  # where the files are; `data_identity` says which files they are
    "prune_method.pruner.latency_tables",  # where measured tables are kept, like `paths`
)


def _without(config: dict[str, Any], dotted: str) -> dict[str, Any]:
    head, _, rest = dotted.partition(".")
    if head not in config:
        return config
    if not rest:
        return {k: v for k, v in config.items() if k != head}
    if not isinstance(config[head], dict):
        return config
    return {**config, head: _without(config[head], rest)}


def _inert(config: dict[str, Any]) -> tuple[str, ...]:
    """Keys that change nothing in this config: a structured cut's latency target unless its
    unit is latency (so runs from before `prune_method.latency` existed keep their identity)."""
    prune_method = config.get("prune_method")
    if not isinstance(prune_method, dict) or prune_method.get("unit") == "latency":
        return ()
    return ("prune_method.latency", "prune_method.pruner.latency")


def configuration(config: dict[str, Any], leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """A run's config (as in metrics.json's `config`) minus NOT_CONFIGURATION, `leave_out` and
    what is inert in it (`_inert`)."""
    for dotted in (*NOT_CONFIGURATION, *_inert(config), *leave_out):
        config = _without(config, dotted)
    return config


def config_fingerprint(config: dict[str, Any], leave_out: tuple[str, ...] = ()) -> str:
    """A short hash that is equal exactly for runs of the same configuration (seeds aside).

    `leave_out` drops more dotted keys, e.g. ("schedule", "kd") to pair runs across orders and KD.
    """
    blob = json.dumps(_jsonable(configuration(config, leave_out)), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_sha256(config: dict[str, Any]) -> str:
    """A short hash of a whole resolved config (seeds, paths and all; Hydra's node left out by
    the caller): equal exactly when two processes composed the same config. The key of a run's
    training state, and what every rank of a run over several processes records."""
    blob = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings to one level with dotted keys: {"kd": {"alpha": 1}} -> {"kd.alpha": 1}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
