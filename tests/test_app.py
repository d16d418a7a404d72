"""End to end on digits: each order runs, writes its ledger, reuses the teacher; bad input fails."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.compose import run_args
from helpers.hang_guard import HANG_GUARD
from omegaconf import OmegaConf

from kdprune.app import run
from kdprune.errors import ConfigError
from kdprune.metrics.ledger import LEDGER_KEYS
from kdprune.pruning import load_model
from kdprune.results import config_sha256, read_metrics
from kdprune.run_record import RECORD_VERSION, RECORD_VERSION_KEY, RunRecord

REPO = Path(__file__).resolve().parents[1]
# Two student epochs (one of them fine-tuning) of three batches each, after a two-epoch teacher.
FAST = ["budget.student_epochs=2", "budget.finetune_epochs=1", "teacher.epochs=2",
        "trainer.max_batches=3"]  # fmt: skip


@pytest.mark.parametrize(
    "order",
    [
        ["schedule=prune_then_distill", "student_init=teacher"],
        ["schedule=distill_then_prune", "schedule.distill_epochs=1"],
        ["schedule=joint", "schedule.joint_epochs=1", "schedule.pruning_steps=3"],
        ["schedule=prune_then_distill", "schedule.prune_target=teacher"],
    ],
    ids=["ptd", "dtp", "joint", "ptd-teacher"],
)
def test_each_order_end_to_end(make_cfg, tmp_path: Path, order: list[str]) -> None:
    cfg = make_cfg(*order, *FAST)
    metrics = run(cfg, tmp_path / "run")
    on_disk = read_metrics(tmp_path / "run")
    assert on_disk["order"] == cfg.schedule.name
    # Written through the record: this version, and every field declared there.
    assert on_disk[RECORD_VERSION_KEY] == RECORD_VERSION
    assert set(on_disk) <= RunRecord.__required_keys__ | RunRecord.__optional_keys__
    for key in (
        *LEDGER_KEYS,
        "val_acc",
        "test_acc",
        "teacher_test_acc",
        "after_prune_val_acc",
        "file_size_bytes",
        "method",
        "kd",
        "target_ratio",
        "unit",
        "timings",
    ):
        assert key in on_disk, key
    if order[-1] != "schedule.prune_target=teacher":
        assert metrics["macs_speedup"] > 1.5
        assert 0.4 <= metrics["channel_ratio"] <= 0.65
    assert metrics["history"] and all("val_acc" in r for r in metrics["history"])


def test_second_run_reuses_the_cached_teacher(make_cfg, tmp_path: Path) -> None:
    first = run(make_cfg(*FAST), tmp_path / "a")
    second = run(make_cfg(*FAST), tmp_path / "b")
    assert (first["teacher_source"], second["teacher_source"]) == ("trained", "cache")
    assert first["teacher_test_acc"] == second["teacher_test_acc"]
    assert first["test_acc"] == second["test_acc"]  # same seed, same numbers, cache or not
    assert not any(r["stage"] == "teacher" for r in second["history"])
    # The teacher's logits on the training set are stored beside it and reused by later runs.
    assert len(list((tmp_path / "cache" / "teachers").glob("*.logits.pt"))) == 1


def test_saved_model_reloads_and_scores_the_same(make_cfg, tmp_path: Path) -> None:
    metrics = run(make_cfg(*FAST), tmp_path / "run")
    model = load_model(metrics["model_file"])
    from kdprune.data import digits

    test = digits().test
    with torch.no_grad():
        acc = (model(test.images).argmax(1) == test.labels).float().mean().item()
    assert acc == pytest.approx(metrics["test_acc"], abs=1e-6)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("teacher.epochs=-1", "teacher.epochs"),
        ("schedule.finetune_epochs=-2", "finetune_epochs"),
        ("prune_method.ratio=1.0", "ratio"),
        ("prune_method.ratio=-0.1", "ratio"),
        ("kd.temperature=0", "temperature"),
        ("kd.alpha=1.5", "alpha"),
        ("trainer.batch_size=0", "batch_size"),
        ("trainer.keep_freed_memory_mb=0", "keep_freed_memory_mb"),
        ("trainer.threads=two", "threads"),
    ],
)
def test_bad_values_fail_before_any_work(
    make_cfg, tmp_path: Path, override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        run(make_cfg(override), tmp_path / "run")
    assert not (tmp_path / "cache").exists()  # nothing was trained


def test_unknown_feature_layer_fails_before_any_work(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="layer9"):
        run(make_cfg("kd=attention", "kd.student_layers=[layer9]"), tmp_path / "run")


def test_missing_imagefolder_root(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="root"):
        run(make_cfg("dataset=imagefolder", "dataset.num_classes=2"), tmp_path / "run")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kdprune", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )


def test_cli_unknown_group_option_is_one_line_with_choices(monkeypatch, capsys) -> None:
    # In this process: the fresh process's one line is test_cli_bad_value_is_one_line_error's.
    from kdprune import cli

    monkeypatch.setattr(sys, "argv", ["kdprune", "model=resnet999"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1
    assert "resnet999" in lines[0] and "resnet20" in lines[0]


def test_cli_bad_value_is_one_line_error(tmp_path: Path) -> None:
    out = _cli("dataset=digits", "teacher.epochs=-3", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("kdprune: error:") and "teacher.epochs" in lines[-1]
    assert "Traceback" not in out.stderr


def test_metrics_json_is_valid_json(make_cfg, tmp_path: Path) -> None:
    run(make_cfg(*FAST, "kd=none"), tmp_path / "run")
    data = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert data["kd"] == "none" and data["order"] == "distill_then_prune"
    # What the one rank ran: the hash of the config it recorded (torchrun: one per rank).
    config = {k: v for k, v in data["config"].items() if k != "data_identity"}
    assert data["config_sha256_by_rank"] == [config_sha256(config)]


def test_the_model_config_name_is_recorded_everywhere(make_cfg, tmp_path: Path) -> None:
    from kdprune.pruning import read_model_file
    from kdprune.tracking.wandb_tracker import run_tags

    cfg = make_cfg("model=lenet5_wide", *FAST)
    metrics = run(cfg, tmp_path / "run")
    assert metrics["model"] == "lenet5_wide"
    files = sorted(p.name for p in (tmp_path / "cache" / "teachers").iterdir())
    assert files and all(name.startswith("lenet5_wide-digits-") for name in files)
    assert read_model_file(metrics["model_file"])["model_cfg"]["name"] == "lenet5_wide"
    assert "lenet5_wide" in run_tags(OmegaConf.to_container(cfg, resolve=True))


def test_process_settings_of_a_run_do_not_outlive_it(make_cfg, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    run(make_cfg(*FAST, "trainer.threads=2", "trainer.keep_freed_memory_mb=64"), tmp_path / "r")
    assert torch.get_num_threads() == before


def _tiny_run(tmp_path: Path, stderr) -> subprocess.Popen:
    args = run_args(tmp_path, *FAST, "trainer.progress=auto", f"hydra.run.dir={tmp_path}/run")
    return subprocess.Popen([sys.executable, "-m", "kdprune", *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=stderr, text=True)  # fmt: skip


def test_a_log_file_gets_one_line_per_epoch_and_no_bars(tmp_path: Path) -> None:
    proc = _tiny_run(tmp_path, subprocess.STDOUT)
    out, _ = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 0, out[-2000:]
    assert "\r" not in out and "it/s" not in out
    epochs = [line for line in out.splitlines() if re.search(r"\] - \w+ epoch \d+: ", line)]
    assert len(epochs) == len(read_metrics(tmp_path / "run")["history"]) > 0


def test_a_terminal_gets_progress_bars(tmp_path: Path) -> None:
    import fcntl
    import os
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    # A terminal of 24 x 100 characters (a new pty is 0 x 0, where tqdm draws nothing).
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = _tiny_run(tmp_path, follower)
    os.close(follower)
    seen = b""
    while chunk := _read(leader):  # read while it runs: a full terminal buffer would block it
        seen += chunk
    os.close(leader)
    proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 0
    assert b"it/s" in seen and b"\r" in seen


def _read(fd: int) -> bytes:
    import os

    try:
        return os.read(fd, 1 << 16)
    except OSError:  # EIO: the other side is closed and everything was read
        return b""


def _logging_state() -> list[tuple]:
    loggers = [logging.getLogger(name) for name in ("", "kdprune", "hydra")]
    return [(list(lg.handlers), lg.level, lg.propagate, lg.disabled) for lg in loggers]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["teacher.epochs=1", "trainer.max_batches=2", "budget.student_epochs=2",
          "budget.finetune_epochs=1"], None),
        (["dataset=imagefolder", "dataset.num_classes=3", "dataset.splits.root=/nonexistent"], 2),
    ],
    ids=["finished", "refused"],
)  # fmt: skip
def test_a_command_line_run_leaves_the_loggers_as_it_found_them(
    monkeypatch, tmp_path: Path, args: list[str], code: int | None
) -> None:
    # Hydra's job logging puts a console handler (on this test's captured stdout) and a file
    # handler on the root logger; left there, every later record goes to a closed stream.
    from kdprune import cli

    before = _logging_state()
    argv = ["kdprune", *run_args(tmp_path, *args, f"hydra.run.dir={tmp_path}/run")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) if code else contextlib.nullcontext() as exit_:
        cli.main()
    assert exit_ is None or exit_.value.code == code
    assert (tmp_path / "run" / "app.log").exists()  # Hydra's job logging was on
    assert (tmp_path / "run" / "metrics.json").exists() == (code is None)
    assert _logging_state() == before
