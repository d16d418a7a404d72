"""A fair search: selection on validation and cost only (a whitelist), the pruner fed only epochs
after the cut, pruned trials with constraint values, and the dashboard agreeing with kdprune."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from compose import run_args

from kdprune import cli
from kdprune.errors import ConfigError
from kdprune.sweeping.constraints import parse_constraints
from kdprune.sweeping.selectable import check_selectable, is_selectable

ALLOWED = ["val_acc", "val_loss", "after_prune_val_acc", "int8_val_acc", "teacher_val_acc",
           "macs_speedup", "params_after", "file_size_bytes", "cpu_latency_ms_bs1_after",
           "cpu_speedup_bs64", "int8_speedup_bs1", "onnx_file_size_bytes_int8"]  # fmt: skip
REFUSED = ["test_acc", "test_loss", "teacher_test_acc", "int8_test_acc", "int8_test_loss",
           "pruned_teacher_test_acc", "val_acc_on_test", "macs_speedup_test", "x", ""]  # fmt: skip


@pytest.mark.parametrize("name", ALLOWED)
def test_validation_and_cost_metrics_are_selectable(name: str) -> None:
    assert is_selectable(name)
    check_selectable(name, "sweep_metric")
    assert parse_constraints({name: {"min": 0.0}})[0].metric == name


@pytest.mark.parametrize("name", REFUSED)
def test_everything_else_is_refused_as_metric_and_constraint(name: str) -> None:
    assert not is_selectable(name)
    with pytest.raises(ConfigError, match="sweep_metric"):
        check_selectable(name, "sweep_metric")
    with pytest.raises(ConfigError, match="constraints"):
        parse_constraints({name: {"min": 0.5}})


def _kdprune(monkeypatch, capsys, tmp_path: Path, *args: str) -> tuple[int, list[str]]:
    monkeypatch.chdir(tmp_path)
    argv = [a for a in args if a.startswith("-")]
    rest = [a for a in args if not a.startswith("-")]
    monkeypatch.setattr(
        sys, "argv", ["kdprune", *argv, *run_args(tmp_path, *rest), f"hydra.run.dir={tmp_path}/r"]
    )
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    return exit_.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    "args",
    [
        ("sweep_metric=teacher_test_acc",),
        ("sweep_metric=int8_test_acc",),
        ("sweep_metric=[val_acc,teacher_test_acc]",),
        ("-m", "+sweep=optuna", "+hydra.sweeper.constraints.teacher_test_acc.min=0.5"),
        ("-m", "+sweep=optuna", "+hydra.sweeper.constraints.int8_test_acc.min=0.5"),
    ],
    ids=" ".join,
)
def test_a_test_metric_is_refused_in_one_line(monkeypatch, capsys, tmp_path, args) -> None:
    code, lines = _kdprune(monkeypatch, capsys, tmp_path, *args)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("kdprune: error: "), lines
    assert "test" in lines[0]
    assert not list(tmp_path.rglob("metrics.json")) and not (tmp_path / "cache").exists()
