"""W&B tracking, offline: a run's history and ledger, the sweep summary, fallbacks, no prompt."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import wandb
from helpers.compose import run_args
from helpers.fake_runs import fake_metrics
from helpers.hang_guard import HANG_GUARD
from omegaconf import OmegaConf
from wandb.proto import wandb_internal_pb2

from kdprune.errors import ConfigError
from kdprune.reporting import sweep_summary
from kdprune.reporting.sweep_summary import (
    TABLE_COLUMNS,
    VERDICT_COLUMNS,
    pareto_front,
    sweep_rows,
    sweep_tables,
    table_data,
)
from kdprune.results import write_metrics
from kdprune.tracking import WandbSweepCallback, WandbTracker
from kdprune.tracking.sweep_callback import is_multi_objective
from kdprune.tracking.wandb_tracker import flatten, resolve_mode

CFG = {
    "sweep_name": "orders",
    "seed": 0,
    "schedule": {"name": "joint"},
    "prune_method": {"name": "l1", "ratio": 0.5},
    "kd": {"name": "hinton", "alpha": 0.9},
    "model": {"_target_": "kdprune.models.lenet5"},
    "dataset": {"name": "digits"},
}
EPOCH = {"train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.1, "val_acc": 0.4, "lr": 0.01}
# wandb.init gives up after init_timeout seconds and the run goes on untracked: in a test that
# expects tracking, a hang guard only, which no load reaches (W&B's own service start waits
# WANDB_X_SERVICE_WAIT seconds, set alike in conftest.py and clean_env).
INIT_GUARD = {"init_timeout": HANG_GUARD}


@pytest.fixture
def no_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No API key, no netrc, no W&B settings: what a fresh machine has."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))


def read_records(path: Path) -> list[Any]:
    """The records of a `.wandb` file (W&B's leveldb-style log: 32 KiB blocks, 7-byte headers)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is zero padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if pos + 7 + length > len(data):  # still being written
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def records_of(records: list[Any], kind: str) -> list[Any]:
    return [r for r in records if r.WhichOneof("record_type") == kind]


def items(updates: Any) -> dict[str, Any]:
    """HistoryItem / SummaryItem / ConfigItem lists as {key: value}."""
    return {u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in updates}


def offline_run(root: Path) -> Path:
    (folder,) = (root / "wandb").glob("offline-run-*")
    return folder


def finished_records(root: Path) -> list[Any]:
    """The records of the one offline run under `root`, all of them, ending with its exit record.

    `run.finish()` returns before W&B's service process has written the file out; that process
    has written everything once it has ended, which `wandb.teardown()` waits for (no poll, no
    timer). A run made by a child process is complete once the child exited: W&B's atexit hook
    tore its service down; here `wandb.teardown()` then ends this process's service, if any."""
    wandb.teardown()
    (path,) = offline_run(root).glob("run-*.wandb")
    records = read_records(path)
    assert records_of(records, "exit"), f"{path}: no exit record after the service ended"
    return records


def test_resolve_mode_is_offline_without_a_login(no_login, monkeypatch) -> None:
    assert resolve_mode(None) == "offline"
    assert resolve_mode("online") == "offline"  # asked for online, but would have to prompt
    assert resolve_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_mode(None) == "offline"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    assert resolve_mode(None) == "online"
    assert resolve_mode("offline") == "offline"
    with pytest.raises(ConfigError, match="W&B mode"):
        resolve_mode("sometimes")


def test_flatten_gives_dotted_keys() -> None:
    flat = flatten({"kd": {"alpha": 0.9, "layers": ["a"]}, "seed": 0, "empty": {}})
    assert flat == {"kd.alpha": 0.9, "kd.layers": ["a"], "seed": 0, "empty": {}}


def test_tracker_writes_offline_run_with_history_and_ledger(tmp_path, no_login) -> None:
    tracker = WandbTracker(cfg=CFG, run_dir=str(tmp_path / "run"), tags=["mine"], **INIT_GUARD)
    assert tracker.run is not None and tracker.run.offline
    tracker.log({"stage": "distill", "epoch": 1, **EPOCH})
    tracker.log({"stage": "distill", "epoch": 2, **EPOCH, "val_acc": 0.6})
    tracker.log({"stage": "finetune", "epoch": 1, **EPOCH, "val_acc": 0.7})
    tracker.summary({"test_acc": 0.65, "order": "joint", "timings": {"total": 3.0}})
    tracker.finish()
    tracker.finish()  # a second finish does nothing

    records = finished_records(tmp_path / "run")
    (run,) = records_of(records, "run")
    assert run.run.run_group == "orders" and run.run.job_type == "joint"
    assert {"l1", "kd-hinton", "joint", "lenet5", "digits", "mine"} <= set(run.run.tags)
    config = items(run.run.config.update)
    assert config["kd.alpha"] == 0.9 and config["prune_method.ratio"] == 0.5

    history = [items(r.history.item) for r in records_of(records, "history")]
    assert [h["_step"] for h in history] == [0, 1, 2]
    assert [h["global_step"] for h in history] == [0, 1, 2]
    assert [h["distill/epoch"] for h in history[:2]] == [1, 2]
    assert history[1]["distill/val_acc"] == 0.6 and history[2]["finetune/val_acc"] == 0.7
    assert history[2]["val_acc"] == 0.7 and "finetune/train_loss" in history[2]
    metrics = {
        m.metric.name or m.metric.glob_name: m.metric.step_metric
        for m in records_of(records, "metric")
    }
    assert metrics["distill/*"] == "distill/epoch" and metrics["finetune/*"] == "finetune/epoch"

    summary: dict[str, Any] = {}
    for record in records_of(records, "summary"):
        summary.update(items(record.summary.update))
    assert summary["test_acc"] == 0.65 and summary["timings"] == {"total": 3.0}
    (exit_record,) = records_of(records, "exit")
    assert exit_record.exit.exit_code == 0


def test_failed_run_is_marked_failed_and_disabled_mode_writes_nothing(tmp_path, no_login) -> None:
    tracker = WandbTracker(cfg=CFG, run_dir=str(tmp_path / "run"), **INIT_GUARD)
    tracker.finish(failed=True)
    (exit_record,) = records_of(finished_records(tmp_path / "run"), "exit")
    assert exit_record.exit.exit_code == 1

    off = WandbTracker(cfg=CFG, run_dir=str(tmp_path / "off"), mode="disabled")
    off.log({"stage": "distill", "epoch": 1, **EPOCH})
    off.finish()
    assert not (tmp_path / "off" / "wandb").exists()


def test_init_failure_falls_back_to_no_tracking(tmp_path, no_login, monkeypatch, caplog) -> None:
    def refuse(**_: Any) -> None:
        raise wandb.errors.CommError("server unreachable\nsecond line")

    monkeypatch.setattr(wandb, "init", refuse)
    tracker = WandbTracker(cfg=CFG, run_dir=str(tmp_path))
    assert tracker.run is None
    tracker.log({"stage": "distill", "epoch": 1, **EPOCH})
    tracker.summary({"test_acc": 0.5})
    tracker.finish(failed=True)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning == "W&B tracking off for this run: CommError: server unreachable"


PROMPT = b"Enter your choice"  # wandb's login prompt, which waits for an answer forever


def run_python(script: str, env: dict[str, str]) -> tuple[int | None, str]:
    """Run `script` in a fresh interpreter (W&B keeps logins per process) with stdin, stdout and
    stderr on a pseudo-terminal, as in an interactive shell; its exit code and all it printed.

    The terminal is read until every writer closed it (the child, and W&B's service, which the
    child's exit waits for), so no output is lost. A prompt would wait for an answer forever:
    the child is killed as soon as one shows, and after HANG_GUARD seconds (a hang guard)."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=terminal, stderr=terminal, stdout=terminal, env=env
    )
    os.close(terminal)
    guard = threading.Timer(HANG_GUARD, proc.kill)
    guard.start()
    output = b""
    try:
        while chunk := read_terminal(controller):
            output += chunk
            if PROMPT in output:
                proc.kill()
        proc.wait()
    finally:
        guard.cancel()
        os.close(controller)
    return proc.returncode, output.decode(errors="replace")


def read_terminal(fd: int) -> bytes:
    """What the pseudo-terminal's other side wrote; b"" once all of it is read and it is closed."""
    try:
        return os.read(fd, 1 << 16)
    except OSError:  # EIO: every writer closed it, and everything was read
        return b""


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment without any WANDB_ variable, netrc or W&B settings (a fresh machine)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(TERM="xterm", NETRC=str(tmp_path / "no-netrc"), WANDB_CONFIG_DIR=str(tmp_path))
    env.update(WANDB_X_SERVICE_WAIT=str(HANG_GUARD))  # a hang guard (see INIT_GUARD)
    return {**env, **extra}


TRACK_ONE_EPOCH = """
import time
from kdprune.tracking import WandbTracker
start = time.perf_counter()
t = WandbTracker(cfg={{}}, run_dir={run_dir!r}, mode='online', init_timeout={init_timeout})
print('tracking', t.run is not None, 'after', round(time.perf_counter() - start, 1), 's')
t.log({{'stage': 'distill', 'epoch': 1, 'val_acc': 0.5}})
t.finish()
"""


def test_never_prompts_on_a_terminal_without_a_login(tmp_path) -> None:
    # wandb.init(mode="online") asks "Enter your choice" on a terminal and waits forever;
    # the tracker must log offline instead.
    script = TRACK_ONE_EPOCH.format(run_dir=str(tmp_path), init_timeout=HANG_GUARD)
    rc, text = run_python(script, clean_env(tmp_path))
    assert rc == 0, text
    assert "Enter your choice" not in text
    assert "logging offline instead" in text and "tracking True" in text
    assert records_of(finished_records(tmp_path), "history")


@pytest.mark.slow  # ~8 s: a fresh interpreter imports torch, then waits out init_timeout
def test_unreachable_server_times_out_and_falls_back(tmp_path) -> None:
    env = clean_env(tmp_path, WANDB_API_KEY="a" * 40, WANDB_BASE_URL="http://127.0.0.1:9")
    # The time-out is the behaviour under test, and its outcome the same however busy the
    # machine: nothing listens on :9, so W&B can only fail, at once or after init_timeout.
    script = TRACK_ONE_EPOCH.format(run_dir=str(tmp_path), init_timeout=2)
    rc, text = run_python(script, env)
    assert rc == 0, text
    assert "W&B tracking off for this run: CommError" in text and "tracking False" in text


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A sweep folder: 5 finished jobs (two seeds of one point), a failed one, a broken file."""
    runs = [
        ("prune_then_distill", 0.3, 0, 0.80),
        ("prune_then_distill", 0.3, 1, 0.70),
        ("prune_then_distill", 0.6, 0, 0.60),
        ("joint", 0.3, 0, 0.85),
        ("joint", 0.6, 0, 0.50),
    ]
    folder = tmp_path / "sweep"
    for job, (order, ratio, seed, test) in zip((0, 1, 2, 3, 10), runs, strict=True):
        write_metrics(folder / str(job), fake_metrics(order, ratio, seed, test + 0.01, test))
    (folder / "4").mkdir()  # failed: no metrics.json
    (folder / "5").mkdir()
    (folder / "5" / "metrics.json").write_text("{not json")
    return folder


def test_sweep_rows_and_table(sweep) -> None:
    rows = sweep_rows(sweep)
    assert [r["run"] for r in rows] == ["0", "1", "2", "3", "10"]
    assert [r["test_acc"] for r in rows] == [0.80, 0.70, 0.60, 0.85, 0.50]
    data = table_data(rows)
    assert len(data[0]) == len(TABLE_COLUMNS)
    fingerprint = rows[3]["config_fingerprint"]
    removed = 1 - int(10_000 * 0.7**2) / 10_000  # 0.5101: fake_metrics' params_after is an int
    assert data[3] == ["joint", "hinton", "l1", 0.3, removed, removed, pytest.approx(1 / 0.49),
                       0.86, 0.85, 0, fingerprint, "3"]  # fmt: skip


def test_curve_has_a_point_per_configuration_with_its_interval(sweep) -> None:
    # Deliberately changed: x is the achieved weight sparsity, a point is one configuration
    # (config fingerprint) with its distinct seeds averaged and a 95% t interval.
    points = sweep_tables(sweep_rows(sweep)).curve.data
    for point in points:
        point[1] = round(point[1], 2)  # achieved sparsity 0.5101 / 0.8400 (integer params_after)
    assert points[:2] == [["joint", 0.51, 0.85, None, None, 1], ["joint", 0.84, 0.5, None, None, 1]]
    series, sparsity, accuracy, low, high, n = points[2]
    assert series == "prune_then_distill" and sparsity == 0.51 and n == 2
    # 0.80 and 0.70: mean 0.75, std 0.0707, t(0.975, 1) = 12.706 -> 0.75 ± 0.635
    assert accuracy == pytest.approx(0.75) and high - accuracy == pytest.approx(0.6353, abs=1e-4)
    assert low == pytest.approx(2 * accuracy - high)
    assert points[3] == ["prune_then_distill", 0.84, 0.60, None, None, 1]
    assert points[4:] == [["teacher", 0.51, pytest.approx(0.94), None, None, None],
                          ["teacher", 0.84, pytest.approx(0.94), None, None, None]]  # fmt: skip


def test_verdict_table_pairs_the_orders_by_seed(sweep) -> None:
    said = sweep_tables(sweep_rows(sweep)).verdicts.data
    rows = [dict(zip(VERDICT_COLUMNS, r, strict=True)) for r in said]
    assert [r["level"] for r in rows] == ["target 0.3", "target 0.6"]
    # target 0.3: prune_then_distill seeds 0, 1 vs joint seed 0 only: one pair, no interval
    row = rows[0]
    assert (row["a"], row["b"]) == ("prune_then_distill, kd=hinton", "joint, kd=hinton")
    assert row["n"] == 1 and row["mean_diff"] == pytest.approx(-0.05) and row["ci_low"] is None
    assert row["verdict"] == "n = 1: no interval" and row["matched"] is True


def test_pareto_front_keeps_only_undominated_runs() -> None:
    rows = [
        {"val_acc": 0.9, "macs_speedup": 1.0},
        {"val_acc": 0.8, "macs_speedup": 2.0},
        {"val_acc": 0.7, "macs_speedup": 1.5},  # beaten by the one above on both
        {"val_acc": 0.5, "macs_speedup": 4.0},
        {"val_acc": 0.9, "macs_speedup": None},
    ]
    front = pareto_front(rows)
    assert [r["macs_speedup"] for r in front] == [1.0, 2.0, 4.0]
    assert is_multi_objective(OmegaConf.create({"o": ["val_acc", "macs_after"]}).o)
    assert not is_multi_objective("val_acc")


def _tables(run_folder: Path, prefix: str) -> list[dict]:
    files = sorted((run_folder / "files" / "media" / "table").glob(f"{prefix}_*.table.json"))
    return [json.loads(f.read_text()) for f in files]


def test_sweep_callback_logs_one_summary_run(sweep, no_login) -> None:
    config = OmegaConf.create(
        {
            "hydra": {"sweep": {"dir": str(sweep)}},
            "sweep_name": "pareto",
            "sweep_metric": ["val_acc", "macs_after"],
        }
    )
    WandbSweepCallback(project="kdprune", **INIT_GUARD).on_multirun_end(config=config)
    folder = offline_run(sweep)
    (table,) = _tables(folder, "runs")
    assert table["columns"] == list(TABLE_COLUMNS)
    assert [row[-1] for row in table["data"]] == ["0", "1", "2", "3", "10"]
    assert [row[TABLE_COLUMNS.index("test_acc")] for row in table["data"]][:2] == [0.80, 0.70]
    (curve,) = _tables(folder, "test_acc_vs_sparsity_table")
    assert curve["columns"][:3] == ["series", "weight_sparsity", "test_acc"]
    assert {row[0] for row in curve["data"]} == {"prune_then_distill", "joint", "teacher"}
    (verdict,) = _tables(folder, "verdicts")
    assert verdict["columns"] == list(VERDICT_COLUMNS) and len(verdict["data"]) == 2
    (front,) = _tables(folder, "pareto_front")
    assert [row[-1] for row in front["data"]] == ["3", "2"]  # joint 0.3, prune_then_distill 0.6
    assert _tables(folder, "val_acc_vs_macs_speedup_table")

    (run,) = records_of(finished_records(sweep), "run")
    assert run.run.job_type == "sweep-summary" and run.run.run_group == "pareto"


def test_the_summary_logs_what_reporting_builds(sweep, no_login, monkeypatch) -> None:
    """Every table and headline number the W&B summary holds is `sweep_tables`' own, and one
    summary builds the ledger and the verdicts once."""
    quantized = {"quantize": "ptq", "int8_test_acc": 0.54, "onnx_file_size_bytes_fp32": 40_000,
                 "onnx_file_size_bytes_int8": 12_000, "int8_size_reduction": 40 / 12}  # fmt: skip
    write_metrics(sweep / "11", fake_metrics("joint", 0.6, 1, 0.56, 0.55, **quantized))
    built = {"ledger_frame": 0, "verdicts": 0}

    def count(name: str) -> None:
        function = getattr(sweep_summary, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            built[name] += 1
            return function(*args, **kwargs)

        monkeypatch.setattr(sweep_summary, name, counted)

    for name in built:
        count(name)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}, "sweep_name": "pareto",
                               "sweep_metric": ["val_acc", "macs_after"]})  # fmt: skip
    WandbSweepCallback(project="kdprune", **INIT_GUARD).on_multirun_end(config=config)
    assert built == {"ledger_frame": 1, "verdicts": 1}

    expected = sweep_tables(sweep_rows(sweep))
    logged_as = {
        "runs": expected.runs,
        "test_acc_vs_sparsity_table": expected.curve,
        "verdicts": expected.verdicts,
        "val_acc_vs_macs_speedup_table": expected.speedup_runs,
        "pareto_front": expected.pareto_front,
        "int8_runs": expected.int8_runs,
        "test_acc_vs_size_table": expected.sizes,
    }
    for prefix, table in logged_as.items():
        assert table.data, prefix  # the sweep has something in every table
        (logged,) = _tables(offline_run(sweep), prefix)
        assert logged["columns"] == list(table.columns), prefix
        assert logged["data"] == json.loads(json.dumps(table.data)), prefix
    summary: dict[str, Any] = {}
    for record in records_of(finished_records(sweep), "summary"):
        summary.update(items(record.summary.update))
    assert {key: summary[key] for key in expected.headline} == expected.headline


def test_sweep_callback_without_runs_logs_nothing(tmp_path, no_login) -> None:
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}, "sweep_name": None})
    WandbSweepCallback().on_multirun_end(config=config)
    assert not (tmp_path / "wandb").exists()


def test_app_run_with_wandb_logger(make_cfg, tmp_path, no_login) -> None:
    from kdprune.app import run

    epochs = (
        "teacher.epochs=1",
        "schedule.distill_epochs=1",
        "schedule.finetune_epochs=1",
        "trainer.max_batches=3",
    )
    cfg = make_cfg("logger=wandb", f"logger.init_timeout={HANG_GUARD}", *epochs)
    metrics = run(cfg, tmp_path / "run")
    records = finished_records(tmp_path / "run")
    history = [items(r.history.item) for r in records_of(records, "history")]
    assert len(history) == len(metrics["history"])
    assert [h["val_acc"] for h in history] == [e["val_acc"] for e in metrics["history"]]
    summary: dict[str, Any] = {}
    for record in records_of(records, "summary"):
        summary.update(items(record.summary.update))
    assert summary["test_acc"] == metrics["test_acc"]
    assert summary["params_removed_fraction"] == metrics["params_removed_fraction"]
    (run_record,) = records_of(records, "run")
    assert run_record.run.job_type == metrics["order"]


@pytest.mark.slow  # ~30 s: two tiny runs and the teacher through the real command line
def test_multirun_logs_each_job_and_one_sweep_summary(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    args = run_args(tmp_path, "teacher.epochs=1", "budget.student_epochs=2",
                    "budget.finetune_epochs=1", "logger=wandb", "prune_method.ratio=0.3,0.6",
                    f"logger.init_timeout={HANG_GUARD}", "sweep_name=tiny",
                    f"hydra.sweep.dir={sweep}")  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "kdprune", "-m", *args],
        env=clean_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in ("0", "1"):
        (run,) = records_of(finished_records(sweep / job), "run")
        assert run.run.run_group == "tiny" and run.run.job_type == "distill_then_prune"
    (table,) = _tables(offline_run(sweep), "runs")
    ratios = [row[TABLE_COLUMNS.index("target_ratio")] for row in table["data"]]
    assert [row[-1] for row in table["data"]] == ["0", "1"] and ratios == [0.3, 0.6]
