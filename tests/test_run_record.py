"""The run record (`kdprune.run_record`): metrics.json's fields declared once, with a version.

`tests/data/metrics_v0_digits.json` is the metrics.json of a real run written before the record
had a version (main at f490396, tests/helpers/compose.py's TINY digits config plus
`budget.student_epochs=2 budget.finetune_epochs=1 teacher.epochs=2 trainer.max_batches=3`;
its /tmp paths renamed /tmp/digits).
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any

import pytest

from kdprune import run_record
from kdprune.metrics.ledger import LATENCY_BATCH_SIZES, LEDGER_KEYS
from kdprune.quantization.quantize_ledger import VARIANTS, latency_key
from kdprune.reporting.runs import collect_runs
from kdprune.results import METRICS_FILE, read_metrics, run_status, write_json, write_metrics
from kdprune.run_record import (
    CONFIG_FINGERPRINT,
    MACS_SPEEDUP,
    RECORD_VERSION,
    RECORD_VERSION_KEY,
    REQUIRED,
    STATUS,
    TEST_ACC,
    VAL_ACC,
    IncompleteRecord,
    NewerRecord,
    RunRecord,
    build_record,
    check_record,
    record_version,
)

OLD_RUN = Path(__file__).parent / "data" / "metrics_v0_digits.json"
PACKAGE = Path(__file__).resolve().parents[1] / "kdprune"
RECORD_MODULE = PACKAGE / "run_record.py"
# Keys no kdprune module but the record's may spell as a string: readers use its constants.
HOT_KEYS = {
    run_record.VAL_ACC,
    run_record.TEST_ACC,
    run_record.MACS_SPEEDUP,
    run_record.TEACHER_VAL_ACC,
    run_record.TEACHER_TEST_ACC,
    run_record.CONFIG_FINGERPRINT,
    run_record.MACS_BEFORE,
    run_record.MACS_AFTER,
    run_record.PARAMS_BEFORE,
    run_record.PARAMS_AFTER,
    run_record.RECORD_VERSION_KEY,
}
DECLARED = RunRecord.__required_keys__ | RunRecord.__optional_keys__


def old_record() -> dict[str, Any]:
    return json.loads(OLD_RUN.read_text())


def new_record() -> dict[str, Any]:
    """The same run as this kdprune writes it: built through the record."""
    return build_record(old_record())


def test_an_old_metrics_json_reads_as_it_did(tmp_path: Path) -> None:
    old = old_record()
    assert RECORD_VERSION_KEY not in old
    write_json(tmp_path / "run" / METRICS_FILE, old)
    read = read_metrics(tmp_path / "run")
    assert read == old and record_version(read) == 0 and run_status(read) == "ok"
    (row,) = collect_runs(tmp_path).to_dict("records")
    assert row[VAL_ACC] == old[VAL_ACC] and row[TEST_ACC] == old[TEST_ACC]
    assert row[MACS_SPEEDUP] == old[MACS_SPEEDUP]
    assert row[CONFIG_FINGERPRINT] == old[CONFIG_FINGERPRINT]


def test_an_old_file_without_a_status_is_a_finished_run(tmp_path: Path) -> None:
    older = {k: v for k, v in old_record().items() if k != STATUS}
    write_json(tmp_path / "run" / METRICS_FILE, older)
    assert run_status(read_metrics(tmp_path / "run")) == "ok"
    assert len(collect_runs(tmp_path)) == 1


def test_a_new_record_round_trips_with_its_version_first(tmp_path: Path) -> None:
    record = new_record()
    write_metrics(tmp_path, record)
    text = (tmp_path / METRICS_FILE).read_text()
    assert next(iter(json.loads(text))) == RECORD_VERSION_KEY
    read = read_metrics(tmp_path)
    assert read == record and record_version(read) == RECORD_VERSION
    assert {k: v for k, v in read.items() if k != RECORD_VERSION_KEY} == old_record()


def test_a_run_writes_every_required_field_and_only_declared_ones() -> None:
    old = old_record()
    assert REQUIRED["ok"] - {RECORD_VERSION_KEY} <= set(old)
    assert set(old) <= DECLARED, sorted(set(old) - DECLARED)


def test_the_ledger_modules_keys_are_declared() -> None:
    quantized = [latency_key(b, v) for b in LATENCY_BATCH_SIZES for v in VARIANTS]
    assert {*LEDGER_KEYS, *quantized} <= DECLARED


@pytest.mark.parametrize("field", [VAL_ACC, TEST_ACC, MACS_SPEEDUP, "history", RECORD_VERSION_KEY])
def test_writing_a_record_without_a_required_field_raises(tmp_path: Path, field: str) -> None:
    record = new_record()
    del record[field]
    with pytest.raises(IncompleteRecord, match=field):
        write_metrics(tmp_path, record)
    assert not (tmp_path / METRICS_FILE).exists()


def test_a_diverged_record_needs_where_and_a_known_status(tmp_path: Path) -> None:
    identity = {k: old_record()[k] for k in REQUIRED["diverged"] - {"diverged", RECORD_VERSION_KEY}}
    where = {"stage": "distill", "epoch": 1, "step": 2, "error": "loss is nan"}
    diverged = build_record(identity, {STATUS: "diverged", "diverged": where})
    check_record(diverged)
    with pytest.raises(IncompleteRecord, match="diverged"):
        check_record({k: v for k, v in diverged.items() if k != "diverged"})
    with pytest.raises(IncompleteRecord, match="finished"):
        write_metrics(tmp_path, {**new_record(), STATUS: "finished"})


def test_a_record_from_a_newer_kdprune_is_refused_naming_the_file(tmp_path: Path) -> None:
    write_json(tmp_path / METRICS_FILE, {**new_record(), RECORD_VERSION_KEY: RECORD_VERSION + 1})
    with pytest.raises(NewerRecord, match=str(tmp_path / METRICS_FILE)):
        read_metrics(tmp_path)


def spelled_keys(source: str, keys: set[str]) -> list[tuple[int, str]]:
    """(line, key) of every string constant in `source` that is exactly one of `keys` (f-string
    parts included; docstrings and comments, which hold longer text, are not)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in keys:
            found.append((node.lineno, node.value))
    return sorted(found)


def test_the_checker_finds_a_spelled_key() -> None:
    source = 'x = m["val_acc"]\ny = f"{m[\'test_acc\']:.2f}"\n"""val_acc in a docstring"""\n'
    assert spelled_keys(source, {"val_acc", "test_acc"}) == [(1, "val_acc"), (2, "test_acc")]


def test_readers_name_the_hot_fields_through_the_record() -> None:
    spelled = [
        f"{os.path.relpath(path, PACKAGE.parent)}:{line}: {key!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != RECORD_MODULE
        for line, key in spelled_keys(path.read_text(), HOT_KEYS)
    ]
    assert not spelled, "use kdprune.run_record's constants:\n" + "\n".join(spelled)
