"""The run record: every field of a run's `metrics.json`, declared once, with its version.

A run's record is a JSON object. Its fields are declared here as `TypedDict`s, one per part of
the run that produces them (its identity, the outcome of its order, the compression ledger, its
teacher, its budget, the optional latency target and quantization); the names readers use most
are module constants (`VAL_ACC`, `TEST_ACC`, `MACS_SPEEDUP`, ...), so that a reader says which
field it means through this module instead of spelling its key by hand.

Versions (`record_version`):

- 0: a file written before the field existed. Read the same way as version 1; a field a reader
  needs and an old file lacks gets the default readers always gave it (`status` missing: `ok`).
- 1: adds `record_version`; every other field is as in version 0.

A new field is one more entry in the TypedDict of its part (and a constant when readers use it);
a change of meaning bumps `RECORD_VERSION` and teaches `upgrade` to read the older files.

The module sits near the bottom of kdprune's import order (it imports only `kdprune.errors`), so
the stages that build a record and the report, the sweeper and W&B that read one can all use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, TypedDict

from kdprune.errors import ConfigError

RECORD_VERSION: Final = 1
# A file without `record_version` is version 0 (written before the record was versioned).
UNVERSIONED: Final = 0

# Field names readers use, one constant each (the TypedDicts below say what each holds).
RECORD_VERSION_KEY: Final = "record_version"
STATUS: Final = "status"
ORDER: Final = "order"
MODEL: Final = "model"
DATASET: Final = "dataset"
SEED: Final = "seed"
CONFIG: Final = "config"
CONFIG_FINGERPRINT: Final = "config_fingerprint"
DIVERGED: Final = "diverged"
VAL_ACC: Final = "val_acc"
TEST_ACC: Final = "test_acc"
VAL_LOSS: Final = "val_loss"
TEST_LOSS: Final = "test_loss"
MACS_BEFORE: Final = "macs_before"
MACS_AFTER: Final = "macs_after"
MACS_SPEEDUP: Final = "macs_speedup"
PARAMS_BEFORE: Final = "params_before"
PARAMS_AFTER: Final = "params_after"
WEIGHT_SPARSITY: Final = "weight_sparsity"
LATENCY_SPEEDUP: Final = "latency_speedup"
TEACHER_VAL_ACC: Final = "teacher_val_acc"
TEACHER_TEST_ACC: Final = "teacher_test_acc"
TIMINGS: Final = "timings"
HISTORY: Final = "history"

STATUS_OK: Final = "ok"
STATUS_DIVERGED: Final = "diverged"


class IncompleteRecord(ValueError):
    """A record to write lacks a field its status requires: a bug in its writer."""


class NewerRecord(ConfigError):
    """A metrics.json written by a newer kdprune (a higher `record_version`) than this one."""


class DivergedAt(TypedDict):
    """Where a diverged run's loss became NaN or infinite: the stage, its epoch and step, and
    the error's text."""

    stage: str
    epoch: int
    step: int
    error: str


class RunIdentity(TypedDict):
    """What every record holds, a diverged run's too.

    `status`: `ok` (finished) or `diverged`; `order`: the schedule's name; `model`, `dataset`:
    their names; `seed`: the run's seed; `config`: the resolved config (Hydra's node left out;
    an ok run's holds `data_identity` too); `config_fingerprint`: a hash of `config` minus
    seeds and paths (`kdprune.results.config_fingerprint`): equal exactly for runs of the same
    configuration.
    """

    status: str
    order: str
    model: str
    dataset: str
    seed: int
    config: dict[str, Any]
    config_fingerprint: str


class DivergedRecord(RunIdentity):
    """A diverged run's record: its identity and `diverged`, where the loss went non-finite.
    Readers keep such runs out of every statistic (the report lists them apart)."""

    diverged: DivergedAt


class RunSetting(TypedDict, total=False):
    """How a finished run ran: `data_seed` (the data's order and augmentation), `split_seed`
    (the train / val split), `device` as resolved, `world_size` and `backend` (processes, null
    for one), `resumed` (from a saved epoch), `data_identity` (which files the data came from)
    and `config_sha256_by_rank` (the hash of the whole config each rank composed). Every run
    writes them; no reader needs them, and older files lack some."""

    data_seed: int
    split_seed: int
    device: str
    world_size: int
    backend: str | None
    resumed: bool
    data_identity: str
    config_sha256_by_rank: list[str]


class Outcome(TypedDict):
    """What the order produced: the pruning (`method`, `kind`, `kd`, `target_ratio`, `unit`),
    the compressed model's val / test accuracy and loss (validation picks, test reports) and
    the val accuracy right after the cut (`after_prune_val_acc`, null when not measured)."""

    method: str
    kind: str
    kd: str
    target_ratio: float
    unit: str
    val_acc: float
    test_acc: float
    val_loss: float
    test_loss: float
    after_prune_val_acc: float | None


class RunFiles(TypedDict, total=False):
    """The files a finished run wrote beside metrics.json: `model_file` (model.pt), the sizes
    of model.pt and dense.pt, the test predictions' file (`kdprune.predictions`), and the
    architecture's hash on rank 0 and on every rank. Every run writes them; older files lack
    some."""

    model_file: str
    file_size_bytes: int
    dense_file_size_bytes: int
    test_predictions_file: str
    architecture_sha256: str
    architecture_sha256_by_rank: list[str]


class SizeLedger(TypedDict):
    """Sizes of the dense and the compressed model (`kdprune.metrics.ledger`): parameters and
    MACs per sample before / after, the fractions removed, `macs_speedup` (before / after),
    `nonzero_fraction`, `weight_sparsity` (the achieved sparsity), `channel_ratio` (conv output
    channels removed) and `round_to` (the multiple kept widths were rounded to, or null)."""

    params_before: int
    params_after: int
    params_removed_fraction: float
    nonzero_fraction: float
    weight_sparsity: float
    macs_before: int
    macs_after: int
    macs_removed_fraction: float
    macs_speedup: float
    channel_ratio: float
    round_to: int | None


class CpuLatencyLedger(TypedDict, total=False):
    """Eager CPU latency of both models at batch 1 and 64 (median ms per batch, and the
    speed-up before / after), with the CPU that timed them; absent when nothing was timed."""

    cpu_latency_ms_bs1_before: float
    cpu_latency_ms_bs1_after: float
    cpu_speedup_bs1: float
    cpu_latency_ms_bs64_before: float
    cpu_latency_ms_bs64_after: float
    cpu_speedup_bs64: float
    cpu_model: str
    cpu_isa: str
    cpu_vnni: bool
    cpu_amx: bool


class LatencyTargetRecord(TypedDict, total=False):
    """A `prune_method.unit=latency` run's target (`kdprune.metrics.latency_target`): runtime,
    batch size and threads it was timed on, the reduction asked for and its speed-up, and both
    models' measured latency on it (`latency_speedup`: before / after)."""

    latency_runtime: str
    latency_batch_size: int
    latency_threads: int | None
    latency_target_reduction: float
    latency_target_speedup: float
    latency_ms_before: float
    latency_ms_after: float
    latency_speedup: float


class TeacherRecord(TypedDict):
    """The teacher's val / test accuracy (test: the dense reference of the comparison table)."""

    teacher_val_acc: float
    teacher_test_acc: float


class TeacherProvenance(TypedDict, total=False):
    """Which teacher the run used: its model's name, weights (where they came from), file hash
    (what the report pairs teachers by), source (`trained`, `cache`, `checkpoint`, ...) and
    size. Every run writes them; older files lack some."""

    teacher_model: str
    teacher_weights: str | None
    teacher_sha256: str | None
    teacher_source: str
    teacher_macs: int
    teacher_params: int


class StartRecord(TypedDict):
    """The student's starting point: `init` (scratch, teacher, checkpoint), its `weights` and
    the epochs they had already had (`inherited_epochs`, null when unknown)."""

    init: str
    weights: str
    inherited_epochs: int | None


class EpochsRecord(TypedDict):
    """Epochs that shaped the final weights: inherited, the student's own, their total."""

    inherited: int | None
    student: int
    total: int | None


class BudgetRecord(TypedDict):
    """Where the student started (`student_init`, `start`), its epochs and how its final epoch
    was picked (`select_epoch`: best_val or last)."""

    student_init: str
    start: StartRecord
    epochs: EpochsRecord
    select_epoch: str


class EpochRecord(TypedDict, total=False):
    """One epoch of `history`: its stage and number, train / val loss and accuracy, learning
    rate, optimizers rebuilt in it, whether its stage can end on its best val epoch, its
    seconds, and (joint order) whether a cut came right before it."""

    stage: str
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    optimizer_resets: int
    selectable: bool
    seconds: float
    after_cut: bool


class FinishedRecord(RunIdentity, Outcome, SizeLedger, TeacherRecord, BudgetRecord):
    """The fields a finished run's record must have, those its readers rely on: its identity,
    outcome, size ledger, teacher accuracy and budget, the seconds of each stage (`timings`,
    `total` included) and every epoch (`history`, the teacher's when trained in the run)."""

    timings: dict[str, float]
    history: list[EpochRecord]


class QuantizedRecord(TypedDict, total=False):
    """A `quantize=ptq|qat` run's INT8 fields (`kdprune.quantization.quantize_ledger` says what
    each means): the stage, its calibration or training, the INT8 model's accuracy in ONNX
    Runtime, the ONNX files and their sizes, and their latencies at batch 1 and 64."""

    quantize: str
    calibration_images: int
    calibration_method: str
    qat_epochs: int
    int8_layers: int
    int8_instructions: str
    int8_kernel_path: str
    int8_val_acc: float
    int8_test_acc: float
    int8_val_loss: float
    int8_test_loss: float
    onnx_file_size_bytes_dense: int
    onnx_file_size_bytes_fp32: int
    onnx_file_size_bytes_int8: int
    int8_size_reduction: float
    onnx_size_reduction: float
    onnx_dense_file: str
    onnx_fp32_file: str
    int8_model_file: str
    ort_latency_ms_bs1_dense: float
    ort_latency_ms_bs1_fp32: float
    ort_latency_ms_bs1_int8: float
    int8_speedup_bs1: float
    ort_speedup_bs1: float
    ort_latency_ms_bs64_dense: float
    ort_latency_ms_bs64_fp32: float
    ort_latency_ms_bs64_int8: float
    int8_speedup_bs64: float
    ort_speedup_bs64: float


class PruneTargetRecord(TypedDict, total=False):
    """prune_then_distill's choice of model to cut (`prune_target`: `student` or `teacher`);
    when it cut the teacher, the pruned teacher's val accuracy and the cut's pruning steps."""

    prune_target: str
    pruned_teacher_val_acc: float
    pruned_teacher_history_len: int


class RunRecord(
    FinishedRecord,
    RunSetting,
    RunFiles,
    TeacherProvenance,
    PruneTargetRecord,
    CpuLatencyLedger,
    LatencyTargetRecord,
    QuantizedRecord,
    total=False,
):
    """A finished run's whole record: the required fields, the parts every run writes but no
    reader needs, the optional parts and `record_version` (required on writing; 0 when absent)."""

    record_version: int


# The fields a writer must give, by status (`record_version` always).
REQUIRED: Final[dict[str, frozenset[str]]] = {
    STATUS_OK: frozenset(FinishedRecord.__required_keys__) | {RECORD_VERSION_KEY},
    STATUS_DIVERGED: frozenset(DivergedRecord.__required_keys__) | {RECORD_VERSION_KEY},
}


def build_record(*parts: Mapping[str, Any]) -> dict[str, Any]:
    """A record from its parts, merged in order (a later part's field wins), `record_version`
    first. What a stage returns is one part; `write_metrics` checks the whole."""
    record: dict[str, Any] = {RECORD_VERSION_KEY: RECORD_VERSION}
    for part in parts:
        record.update(part)
    return record


def check_record(record: Mapping[str, Any]) -> None:
    """Raise IncompleteRecord unless `record` has every field its status requires."""
    status = record.get(STATUS)
    if status not in REQUIRED:
        raise IncompleteRecord(
            f"a run record's {STATUS} must be one of {sorted(REQUIRED)}, not {status!r}"
        )
    missing = sorted(REQUIRED[status] - set(record))
    if missing:
        raise IncompleteRecord(f"a run record ({STATUS} {status}) lacks {', '.join(missing)}")


def record_version(record: Mapping[str, Any]) -> int:
    """The version a record was written with (0: before records had one)."""
    return int(record.get(RECORD_VERSION_KEY, UNVERSIONED))


def upgrade(record: Any, where: str = "metrics.json") -> Any:
    """A record as read from a file, readable by this kdprune: versions 0 and 1 read alike
    (version 1 only added `record_version`), so they come back as they are. Anything that is
    not a JSON object is returned too: its reader says it is not a run's. A newer version
    raises NewerRecord (`where` names the file)."""
    if isinstance(record, dict) and record_version(record) > RECORD_VERSION:
        raise NewerRecord(
            f"{where} is run record version {record_version(record)}, written by a newer "
            f"kdprune; this one reads versions up to {RECORD_VERSION}"
        )
    return record


def status(record: Mapping[str, Any]) -> str:
    """A record's status: `ok`, also for files written before `status` existed."""
    return str(record.get(STATUS, STATUS_OK))
